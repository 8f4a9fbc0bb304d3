"""Softmax regression: Coral's own expectations, L2 in the gradient, determinism, progress,
cancellation, warm start from imprinting and every refusal."""
from __future__ import annotations

from typing import List, Tuple

import numpy as np
import pytest

from edgetpud.daemon.errors import InvalidArgumentError, PreconditionError
from edgetpud.daemon.learn.head import LinearHead, l2_normalize
from edgetpud.daemon.learn.imprinting import imprint_head, imprinted_classes
from edgetpud.daemon.learn.softmax_regression import Progress, SoftmaxSGD, train

# Coral's expectations, as pycoral's tests/softmax_regression_test.py (and libcoral's
# coral/learn/backprop/softmax_regression_model_test.cc) set them: D = 2; three classes
# with means (1, 1), (-1, -1), (1, -1), times 3 for the separable case; identity
# covariance; 230 points in all (76, 76, 78), the first 200 of a shuffle for training
# and the last 30 for validation (200 and 30 in all, not a class); batch size 100; an
# "iteration" is one SGD step on one batch (Coral draws its 100 rows with replacement;
# ours are the next 100 of the epoch's shuffle, 2 steps an epoch); loss and gradient are
# means over the batch. Separable: 20 iterations at 0.01 give training accuracy > 0.99;
# non-separable: 50 iterations at 0.1 give > 0.8. The data is drawn as theirs is, with
# NumPy's legacy generator and their seeds (12345 and 54321).
#
# The issue describes the means as "-3, 0, +3 on every axis" with 200 + 30 a class: that
# is not Coral's test, and no linear model gets there in 20 steps of 0.01 from zero: the
# middle class sits at the origin between the two others on one line, so it can only win
# through its bias, which those few small steps barely move (we measured 0.67-0.71
# training accuracy for D = 2..16, raw or normalized). Normalization changes nothing on
# Coral's data (its means are off the origin), so both settings are tested on it.
CORAL_MEANS = np.array([[1.0, 1.0], [-1.0, -1.0], [1.0, -1.0]])


def _coral_data(means: np.ndarray, seed: int) -> Tuple[np.ndarray, np.ndarray]:
    sizes = (76, 76, 78)
    state = np.random.RandomState(seed)
    x = np.concatenate([state.multivariate_normal(m, np.eye(2), n) for m, n in zip(means, sizes)])
    y = np.concatenate([np.full(n, k) for k, n in enumerate(sizes)])
    order = state.permutation(len(y))
    return x[order][:200].astype(np.float32), y[order][:200]


def _accuracy(head: LinearHead, x: np.ndarray, y: np.ndarray) -> float:
    labels = np.array([head.labels[k] for k in np.argmax(head.logits(x), axis=1)])
    return float(np.mean(labels == np.array([str(v) for v in y])))


@pytest.mark.parametrize("normalize", [False, True])
def test_coral_separable(normalize: bool) -> None:
    x, y = _coral_data(CORAL_MEANS * 3, 12345)
    result = train(x, y, iterations=20, learning_rate=0.01, batch_size=100, normalize=normalize)
    assert result.head.info["iterations"] == 20
    assert _accuracy(result.head, x, y) > 0.99


@pytest.mark.parametrize("normalize", [False, True])
def test_coral_non_separable(normalize: bool) -> None:
    x, y = _coral_data(CORAL_MEANS, 54321)
    result = train(x, y, iterations=50, learning_rate=0.1, batch_size=100, normalize=normalize)
    assert result.head.info["iterations"] == 50
    assert _accuracy(result.head, x, y) > 0.8


def _blobs(k: int = 4, per_class: int = 30, dim: int = 16, spread: float = 1.0,
           seed: int = 0) -> Tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(k, dim)) * 2
    y = np.repeat(np.arange(k), per_class)
    return (centers[y] + rng.normal(scale=spread, size=(len(y), dim))).astype(np.float32), y


def _regularised_loss(w: np.ndarray, b: np.ndarray, x: np.ndarray, y: np.ndarray, l2: float) -> float:
    """Mean cross-entropy + l2/2 |W|^2 in float64, written out independently of the module."""
    z = x.astype(np.float64) @ w + b
    z = z - z.max(axis=1, keepdims=True)
    log_p = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    return float(-log_p[np.arange(len(y)), y].mean() + 0.5 * l2 * np.sum(w * w))


def test_step_follows_the_gradient_of_the_regularised_loss() -> None:
    # The step's update divided by -lr must be the numerical gradient of CE + l2/2 |W|^2.
    # Dropping l2·W from the gradient leaves an error of l2·|W| (here ~0.5 a weight) where the
    # tolerance is 1e-3: this test fails then.
    rng = np.random.default_rng(7)
    x, y = _blobs(k=3, per_class=8, dim=5, seed=7)
    x = l2_normalize(x)
    w = rng.normal(size=(5, 3)).astype(np.float32)
    b = rng.normal(size=3).astype(np.float32)
    l2, lr = 0.5, 1e-3
    sgd = SoftmaxSGD(w, b, lr, l2, max_batch=len(y))
    sgd.step(x, np.eye(3, dtype=np.float32)[y])
    step_grad_w = (w.astype(np.float64) - sgd.weights) / lr
    step_grad_b = (b.astype(np.float64) - sgd.bias) / lr

    w64, b64, eps = w.astype(np.float64), b.astype(np.float64), 1e-6
    num_w = np.zeros_like(w64)
    for i in range(w64.shape[0]):
        for j in range(w64.shape[1]):
            plus, minus = w64.copy(), w64.copy()
            plus[i, j] += eps
            minus[i, j] -= eps
            num_w[i, j] = (_regularised_loss(plus, b64, x, y, l2) - _regularised_loss(minus, b64, x, y, l2)) / (2 * eps)
    num_b = np.zeros_like(b64)
    for j in range(3):
        plus, minus = b64.copy(), b64.copy()
        plus[j] += eps
        minus[j] -= eps
        num_b[j] = (_regularised_loss(w64, plus, x, y, l2) - _regularised_loss(w64, minus, x, y, l2)) / (2 * eps)
    assert np.abs(l2 * w64).max() > 0.1  # the L2 share of the gradient is large enough to see
    np.testing.assert_allclose(step_grad_w, num_w, atol=1e-3)
    np.testing.assert_allclose(step_grad_b, num_b, atol=1e-3)


def test_strong_l2_converges_to_the_regularised_optimum() -> None:
    # Separable data: without L2 in the gradient the weights grow without bound; with it,
    # full-batch training settles where the regularised gradient is zero, so there
    # l2·W = -Xᵀ(P - Y)/N, and the reported loss is the regularised one.
    x, y = _blobs(k=3, per_class=20, dim=8, spread=0.3, seed=3)
    l2 = 0.1
    result = train(x, y, epochs=600, learning_rate=0.5, batch_size=len(y), l2=l2)
    head = result.head
    f = head.features(x).astype(np.float64)
    p = head.scores(x).astype(np.float64)
    residual = f.T @ (p - np.eye(3)[y]) / len(y)
    np.testing.assert_allclose(l2 * head.weights, -residual, atol=2e-4)
    assert np.abs(head.weights).max() < 5.0
    expected = _regularised_loss(head.weights.astype(np.float64), head.bias.astype(np.float64), f, y, l2)
    assert result.history[-1].loss == pytest.approx(expected, rel=1e-4)
    assert result.history[-1].loss > _regularised_loss(head.weights.astype(np.float64),
                                                       head.bias.astype(np.float64), f, y, 0.0)


def test_same_seed_same_head_bit_for_bit() -> None:
    x, y = _blobs()
    kwargs = dict(epochs=3, batch_size=16, learning_rate=0.1, l2=1e-3, validation_fraction=0.2)
    a = train(x, y, seed=11, **kwargs)
    b = train(x, y, seed=11, **kwargs)
    c = train(x, y, seed=12, **kwargs)
    assert a.head.weights.tobytes() == b.head.weights.tobytes()
    assert a.head.bias.tobytes() == b.head.bias.tobytes()
    assert a.history == b.history
    assert a.head.weights.tobytes() != c.head.weights.tobytes()


def test_progress_after_every_epoch() -> None:
    x, y = _blobs(per_class=25)  # 100 samples, batches of 30: 4 steps an epoch
    seen: List[Progress] = []
    result = train(x, y, epochs=5, batch_size=30, learning_rate=0.5, on_progress=seen.append)
    assert seen == result.history
    assert [p.epoch for p in seen] == [1, 2, 3, 4, 5]
    assert [p.iteration for p in seen] == [4, 8, 12, 16, 20]
    assert all(p.epochs == 5 for p in seen)
    assert seen[-1].loss < seen[0].loss
    assert 0.0 <= seen[0].train_accuracy <= 1.0 and seen[-1].train_accuracy > 0.9
    assert all(np.isnan(p.validation_accuracy) for p in seen)
    assert result.stopped is False


def test_iterations_cross_epochs() -> None:
    x, y = _blobs(per_class=25)
    result = train(x, y, iterations=10, batch_size=30)  # 4 steps an epoch: 4, 8, then 2
    assert [p.iteration for p in result.history] == [4, 8, 10]
    assert [p.epochs for p in result.history] == [3, 3, 3]


def test_should_stop_cancels_between_steps() -> None:
    x, y = _blobs(per_class=25)
    calls = {"n": 0}

    def stop_after_six() -> bool:
        calls["n"] += 1
        return calls["n"] > 6

    result = train(x, y, epochs=10, batch_size=30, should_stop=stop_after_six)
    assert result.stopped is True
    assert result.head.info["iterations"] == 6
    assert [p.iteration for p in result.history] == [4, 6]  # epoch 1, then the partial epoch 2
    assert result.head.info["stopped"] is True
    # stopped before the first step: the starting weights, no history
    result = train(x, y, epochs=10, should_stop=lambda: True)
    assert result.stopped and result.history == [] and not result.head.weights.any()


def test_validation_split_is_stratified_and_reported() -> None:
    x, y = _blobs(k=3, per_class=20)
    result = train(x, y, epochs=5, learning_rate=0.5, validation_fraction=0.25, seed=1)
    assert result.head.info["validation_samples"] == 15  # 5 of each class
    assert result.head.info["train_samples"] == 45
    assert all(0.0 <= p.validation_accuracy <= 1.0 for p in result.history)
    assert result.history[-1].validation_accuracy > 0.9
    # a class of one sample keeps it for training
    x1 = np.vstack([x, x[:1]])
    y1 = np.concatenate([y, [7]])
    one = train(x1, y1, epochs=1, validation_fraction=0.5)
    assert one.head.info["samples"]["7"] == 1 and "7" in one.head.labels


def test_string_labels_and_class_order() -> None:
    x, y = _blobs(k=3)
    names = np.array(["cat", "ant", "bee"])[y]
    result = train(x, list(names), epochs=3, learning_rate=0.5)
    assert result.head.labels == ("ant", "bee", "cat")
    assert result.head.sources == ("trained",) * 3
    assert result.head.normalize is True
    assert _accuracy(result.head, x, names) > 0.9
    ordered = train(x, list(names), epochs=3, learning_rate=0.5, classes=["cat", "ant", "bee"])
    assert ordered.head.labels == ("cat", "ant", "bee")
    assert _accuracy(ordered.head, x, names) > 0.9


def test_warm_start_from_imprinting_beats_cold_start_after_one_epoch() -> None:
    # few samples (3 a class, 6 classes), one epoch of one step: the imprinted start is already
    # a good classifier in the same (normalized) space; the cold start has barely moved from uniform
    rng = np.random.default_rng(5)
    dim, k = 64, 6
    centers = rng.normal(size=(k, dim)) * 1.0
    few_y = np.repeat(np.arange(k), 3)
    few_x = (centers[few_y] + rng.normal(size=(len(few_y), dim))).astype(np.float32)
    test_y = np.repeat(np.arange(k), 50)
    test_x = (centers[test_y] + rng.normal(size=(len(test_y), dim))).astype(np.float32)
    labels = [f"class{i}" for i in range(k)]
    imprinted = imprint_head(imprinted_classes({labels[i]: few_x[few_y == i] for i in range(k)}, dim))

    def held_out(head: LinearHead) -> Tuple[float, float]:
        cols = [head.labels.index(l) for l in labels]
        p = head.scores(test_x)[:, cols]
        return float(np.mean(np.argmax(p, axis=1) == test_y)), float(-np.log(p[np.arange(len(test_y)), test_y]).mean())

    y_names = [labels[i] for i in few_y]
    warm = train(few_x, y_names, epochs=1, learning_rate=0.1, warm_start=imprinted)
    cold = train(few_x, y_names, epochs=1, learning_rate=0.1)
    assert warm.head.info["warm_start"] == labels
    warm_acc, warm_loss = held_out(warm.head)
    cold_acc, cold_loss = held_out(cold.head)
    assert warm_loss < cold_loss - 0.5
    assert warm_acc >= cold_acc
    assert warm.history[0].loss < cold.history[0].loss


def test_warm_start_matches_columns_by_label() -> None:
    x, y = _blobs(k=3, dim=16)
    names = np.array(["a", "b", "c"])[y]
    rng = np.random.default_rng(9)
    warm = LinearHead(rng.normal(size=(16, 3)), rng.normal(size=3), ("c", "zzz", "a"), ("imprinted",) * 3, True)
    stop = train(x, list(names), epochs=1, warm_start=warm, should_stop=lambda: True)
    head = stop.head  # no step taken: exactly the starting point
    assert head.labels == ("a", "b", "c")
    assert np.array_equal(head.weights[:, 0], warm.weights[:, 2])
    assert np.array_equal(head.weights[:, 2], warm.weights[:, 0])
    assert not head.weights[:, 1].any() and head.bias[1] == 0  # "b" is new: starts at zero
    assert head.bias[0] == warm.bias[2] and head.bias[2] == warm.bias[0]
    assert head.info["warm_start"] == ["a", "c"]


def test_one_class_or_no_samples_is_a_precondition() -> None:
    x, _ = _blobs(k=1)
    for xs, ys in ((x, [0] * len(x)), (np.zeros((0, 16), np.float32), []), ([], [])):
        with pytest.raises(PreconditionError) as info:
            train(xs, ys)
        assert str(info.value).startswith("training needs samples of at least two classes; ")
    # a class named in classes without samples does not count
    with pytest.raises(PreconditionError):
        train(x, [0] * len(x), classes=[0, 1])


@pytest.mark.parametrize("change", ["nan", "inf", "wrong_size", "one_dim", "zero_row", "labels_short",
                                    "labels_2d", "labels_mixed", "labels_float", "label_not_in_classes",
                                    "classes_twice"])
def test_bad_data_is_invalid_argument(change: str) -> None:
    x, y = _blobs(k=2, dim=8)
    labels: object = list(y)
    kwargs: dict = {}
    if change == "nan":
        x[3, 2] = np.nan
    elif change == "inf":
        x[0, 0] = np.inf
    elif change == "wrong_size":
        kwargs["warm_start"] = LinearHead(np.zeros((9, 2)), np.zeros(2), ("0", "1"), ("imprinted",) * 2, True)
    elif change == "one_dim":
        x = x[0]
        labels = [0] * len(x)
    elif change == "zero_row":
        x[5] = 0.0
    elif change == "labels_short":
        labels = list(y[:-1])
    elif change == "labels_2d":
        labels = np.stack([y, y], axis=1)
    elif change == "labels_mixed":
        labels = ["a"] + list(y[1:])
    elif change == "labels_float":
        labels = y.astype(np.float64) + 0.5
    elif change == "label_not_in_classes":
        kwargs["classes"] = [0]
        labels = list(y)
    elif change == "classes_twice":
        kwargs["classes"] = [0, 1, 1]
    with pytest.raises(InvalidArgumentError):
        train(x, labels, **kwargs)


def test_raw_features_accept_a_zero_row_and_refuse_a_normalized_warm_start() -> None:
    x, y = _blobs(k=2, dim=8)
    x[5] = 0.0
    assert train(x, y, epochs=1, normalize=False).head.normalize is False
    warm = LinearHead(np.zeros((8, 2)), np.zeros(2), ("0", "1"), ("imprinted",) * 2, True)
    with pytest.raises(InvalidArgumentError):
        train(x, y, epochs=1, normalize=False, warm_start=warm)


@pytest.mark.parametrize("kwargs", [
    dict(learning_rate=0), dict(learning_rate=-0.1), dict(learning_rate=float("nan")), dict(learning_rate=float("inf")),
    dict(learning_rate="0.1"), dict(batch_size=0), dict(batch_size=-1), dict(batch_size=2.5), dict(batch_size=True),
    dict(epochs=0), dict(epochs=-3), dict(epochs=1.5), dict(iterations=0), dict(epochs=2, iterations=3),
    dict(l2=-1e-3), dict(l2=float("nan")), dict(validation_fraction=1.0), dict(validation_fraction=-0.1),
    dict(validation_fraction=float("nan")), dict(seed=-1), dict(seed=1.5), dict(seed="1"),
])
def test_bad_hyperparameters_are_invalid_argument(kwargs: dict) -> None:
    x, y = _blobs(k=2, dim=8)
    with pytest.raises(InvalidArgumentError):
        train(x, y, **kwargs)


def test_batch_larger_than_the_data_is_the_whole_split() -> None:
    x, y = _blobs(k=2, per_class=10, dim=8)
    result = train(x, y, epochs=3, batch_size=1000, learning_rate=0.5)
    assert result.head.info["batch_size"] == 20
    assert [p.iteration for p in result.history] == [1, 2, 3]


def test_head_round_trips_through_bytes() -> None:
    x, y = _blobs(k=3)
    head = train(x, y, epochs=2, validation_fraction=0.2).head
    again = LinearHead.from_bytes(head.to_bytes())
    assert again.labels == head.labels and np.array_equal(again.weights, head.weights)
    assert again.info["method"] == "softmax_regression"
