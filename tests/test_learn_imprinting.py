"""Weight imprinting: the head it makes, the chosen scale, running sums and the per-class cap."""
from __future__ import annotations

import numpy as np
import pytest

from edgetpud.daemon.errors import (InvalidArgumentError, NotFoundError, PreconditionError,
                                    ResourceExhaustedError)
from edgetpud.daemon.learn.head import LinearHead, l2_normalize
from edgetpud.daemon.learn.imprinting import (DEFAULT_SCALE, MAX_SAMPLES_PER_CLASS, ClassSums, Imprinter,
                                              imprint_head, imprinted_classes)

DIM = 64


def _sample_and_head(cosines: list, scale: float) -> tuple:
    """A unit sample and an imprinted head whose class ``j`` is at cosine ``cosines[j]`` to it.

    Class ``j``'s direction is ``a_j s + sqrt(1 - a_j^2) u_j`` with the ``u_j`` orthonormal and
    orthogonal to the sample ``s``; its samples have other lengths (imprinting uses directions only).
    """
    q, _ = np.linalg.qr(np.random.default_rng(0).normal(size=(DIM, len(cosines) + 1)))
    sample, others = q[:, 0], q[:, 1:].T
    classes = {}
    for j, (a, u) in enumerate(zip(cosines, others)):
        sums = ClassSums.empty(DIM)
        sums.add(((a * sample + np.sqrt(1 - a * a) * u) * (j + 2.0))[None, :])
        classes[f"c{j}"] = sums
    return sample.astype(np.float32) * 5.0, imprint_head(classes, scale)


def test_head_is_scaled_directions_on_normalized_embeddings() -> None:
    rng = np.random.default_rng(0)
    samples = {"cat": rng.normal(size=(5, DIM)), "dog": rng.normal(size=(3, DIM)) + 2}
    head = imprint_head(imprinted_classes(samples, DIM))
    assert head.labels == ("cat", "dog")
    assert head.sources == ("imprinted", "imprinted")
    assert head.normalize is True
    assert np.all(head.bias == 0)
    for k, label in enumerate(head.labels):
        mean = l2_normalize(samples[label]).mean(axis=0)
        np.testing.assert_allclose(head.weights[:, k], DEFAULT_SCALE * mean / np.linalg.norm(mean), rtol=1e-5,
                                   atol=1e-6)
    # logits are the scale times the cosine to each class, whatever the embedding's length
    e = rng.normal(size=DIM).astype(np.float32)
    cos = [float(e @ head.weights[:, k] / np.linalg.norm(e) / DEFAULT_SCALE) for k in range(2)]
    np.testing.assert_allclose(head.logits(e * 7.0)[0], DEFAULT_SCALE * np.array(cos), rtol=1e-4, atol=1e-5)


def test_labels_keep_insertion_order() -> None:
    imprinter = Imprinter(DIM)
    rng = np.random.default_rng(2)
    for label in ("zebra", "apple", "mango"):
        imprinter.add(label, rng.normal(size=(2, DIM)))
    assert imprinter.head().labels == ("zebra", "apple", "mango")
    assert list(imprinter.counts()) == ["zebra", "apple", "mango"]


def test_default_scale_gives_a_clear_top_score_to_a_close_sample() -> None:
    # 10 classes; the sample's cosine to its class (0.85) beats every other class's (0.35) by 0.5
    cosines = [0.35] * 10
    cosines[4] = 0.85
    sample, head = _sample_and_head(cosines, DEFAULT_SCALE)
    np.testing.assert_allclose(head.logits(sample)[0], DEFAULT_SCALE * np.array(cosines), atol=1e-4)
    scores = head.scores(sample)[0]
    assert int(np.argmax(scores)) == 4
    assert scores[4] > 0.9
    # the property is the scale's: without one, the same sample gets a flat score
    sample, flat = _sample_and_head(cosines, 1.0)
    assert flat.scores(sample)[0][4] < 0.3


def test_default_scale_keeps_an_ambiguous_sample_unsaturated() -> None:
    # almost halfway between two classes (cosines 0.62 and 0.55), far from the other eight
    cosines = [0.62, 0.55] + [0.1] * 8
    sample, head = _sample_and_head(cosines, DEFAULT_SCALE)
    scores = head.scores(sample)[0]
    assert int(np.argmax(scores)) == 0
    assert scores[0] < 0.75
    # a sample far from every class spreads its score instead of naming one with confidence
    sample, head = _sample_and_head([0.1, 0.05, 0.12, 0.08, 0.1], DEFAULT_SCALE)
    assert head.scores(sample)[0].max() < 0.35
    # too large a scale saturates on the ambiguous sample: the test can tell
    sample, saturated = _sample_and_head(cosines, 100.0)
    assert saturated.scores(sample)[0][0] > 0.99


def test_one_at_a_time_gives_the_same_head_as_all_at_once() -> None:
    rng = np.random.default_rng(3)
    data = {"a": rng.normal(size=(37, DIM)).astype(np.float32),
            "b": (rng.normal(size=(20, DIM)) + 1).astype(np.float32)}
    at_once, one_by_one, in_chunks = Imprinter(DIM), Imprinter(DIM), Imprinter(DIM)
    for label, x in data.items():
        at_once.add(label, x)
        for row in x:
            one_by_one.add(label, row)
        for chunk in np.array_split(x, 4):  # later chunks land on a non-zero running sum
            in_chunks.add(label, chunk)
    reference = at_once.head()
    for other in (one_by_one, in_chunks):
        head = other.head()
        assert head.labels == reference.labels
        assert head.weights.tobytes() == reference.weights.tobytes()
        for label in data:
            assert other.classes[label].normalized_sum.tobytes() == at_once.classes[label].normalized_sum.tobytes()
            assert other.classes[label].raw_sum.tobytes() == at_once.classes[label].raw_sum.tobytes()
        assert other.counts() == {"a": 37, "b": 20}


def test_cap_refuses_the_sample_past_it_and_changes_nothing() -> None:
    imprinter = Imprinter(DIM)
    rng = np.random.default_rng(4)
    imprinter.add("full", rng.normal(size=(MAX_SAMPLES_PER_CLASS - 1, DIM)))
    imprinter.add("full", rng.normal(size=DIM))
    before = imprinter.head().weights.copy()
    with pytest.raises(ResourceExhaustedError) as info:
        imprinter.add("full", rng.normal(size=DIM))
    assert "'full'" in str(info.value) and str(MAX_SAMPLES_PER_CLASS) in str(info.value)
    assert imprinter.counts() == {"full": MAX_SAMPLES_PER_CLASS}
    assert np.array_equal(imprinter.head().weights, before)
    # a batch that would cross the cap is refused whole
    imprinter.add("other", rng.normal(size=(150, DIM)))
    with pytest.raises(ResourceExhaustedError):
        imprinter.add("other", rng.normal(size=(51, DIM)))
    assert imprinter.counts()["other"] == 150


def test_remove() -> None:
    imprinter = Imprinter(DIM)
    imprinter.add("a", np.ones(DIM))
    imprinter.add("b", -np.ones(DIM))
    imprinter.remove("a")
    assert imprinter.head().labels == ("b",)
    with pytest.raises(NotFoundError) as info:
        imprinter.remove("a")
    assert "'a'" in str(info.value)


@pytest.mark.parametrize("bad", [np.ones(DIM + 1), np.full(DIM, np.nan), np.full(DIM, np.inf), np.zeros(DIM),
                                 np.ones((0, DIM))])
def test_bad_embeddings_are_refused_and_change_nothing(bad: np.ndarray) -> None:
    imprinter = Imprinter(DIM)
    imprinter.add("a", np.ones(DIM))
    with pytest.raises(InvalidArgumentError):
        imprinter.add("a", bad)
    assert imprinter.counts() == {"a": 1}


@pytest.mark.parametrize("label", ["", None, 3])
def test_bad_label(label: object) -> None:
    with pytest.raises(InvalidArgumentError):
        Imprinter(DIM).add(label, np.ones(DIM))  # type: ignore[arg-type]


def test_head_needs_classes_with_samples_and_a_good_scale() -> None:
    with pytest.raises(PreconditionError):
        Imprinter(DIM).head()
    with pytest.raises(PreconditionError):
        imprint_head({"empty": ClassSums.empty(DIM)})
    sums = {"a": ClassSums.empty(DIM)}
    sums["a"].add(np.ones((1, DIM)))
    for scale in (0, -1.0, float("nan"), float("inf"), "10", True):
        with pytest.raises(InvalidArgumentError):
            imprint_head(sums, scale)  # type: ignore[arg-type]
    assert imprint_head(sums, np.float32(5)).weights[0, 0] == pytest.approx(5 / np.sqrt(DIM))
