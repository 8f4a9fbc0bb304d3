"""Last-layer backpropagation: softmax regression on embeddings by mini-batch SGD.

Only the final fully connected layer (``W`` ``[D, K]`` and ``b`` ``[K]``) learns; the
base network stays on the Edge TPU and gives the embeddings. The loss minimised is
the mean softmax cross-entropy plus ``l2/2 * |W|²``, and the L2 term is in the
gradient as well as in the reported loss (Coral's adds it to the loss only, so its
``reg`` never shrinks a weight).

By default the features are L2-normalized embeddings, the space an imprinted head
(``imprint_head``: columns ``s * direction``, bias 0) lives in, so training can start
from an imprinted head. ``normalize=False`` trains on the raw embeddings (Coral's setting).

One iteration is two matrix products (``X_b · W`` forward, ``X_bᵀ · G`` backward) on
preallocated float32 buffers, plus O(B·K + D·K) elementwise work; the batch rows are
gathered into a buffer once per epoch (one shuffled copy of the training set), so a
batch is a view. ``scripts/bench/bench_backprop.py`` measures it against its floor.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from edgetpud.daemon.errors import InvalidArgumentError, PreconditionError

from .head import LinearHead, l2_normalize
from .imprinting import check_embeddings

#: Defaults for L2-normalized embeddings (the daemon's features), measured with
#: ``scripts/bench/bench_kshot.py`` on the digit and photo-crop sets through the real
#: extractor: unit-norm features need large steps before the logits spread enough for
#: confident scores. Coral's lr 0.01 with 50 epochs of batches of 100 left a trained
#: head's logits within ~0.03 of each other (near-uniform scores, and the bias's noise
#: from a partial last batch as large as the signal): 0.82 on digits at k = 100, where
#: these give 0.93. Raw (``normalize=False``) features want a far smaller rate.
DEFAULT_LEARNING_RATE = 8.0
DEFAULT_BATCH_SIZE = 32
DEFAULT_L2 = 1e-5
#: SGD steps when neither epochs nor iterations are given: steps, not epochs, so that a
#: handful of samples is trained as long as many are.
DEFAULT_ITERATIONS = 1500


@dataclass(frozen=True)
class Progress:
    """Where training stands after an epoch (or after the last, partial one).

    ``loss`` is the regularised loss on the whole training split; the accuracies are
    top-1 on the training and validation splits (``validation_accuracy`` is NaN when
    there is no validation split). ``iteration`` counts the SGD steps so far.
    """

    epoch: int
    epochs: int
    loss: float
    train_accuracy: float
    validation_accuracy: float
    iteration: int


@dataclass(frozen=True)
class TrainResult:
    head: LinearHead
    history: List[Progress] = field(default_factory=list)
    stopped: bool = False


def _positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise InvalidArgumentError(f"{name} must be a whole number of at least 1; got {value!r}")
    return int(value)


def _finite(name: str, value: Any) -> float:
    numeric = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)
    if not numeric or not math.isfinite(float(value)):
        raise InvalidArgumentError(f"{name} must be a finite number; got {value!r}")
    return float(value)


def _check_hyperparameters(learning_rate: Any, batch_size: Any, epochs: Any, iterations: Any,
                           l2: Any, validation_fraction: Any, seed: Any) -> Tuple[float, int, float, float, int]:
    lr = _finite("learning_rate", learning_rate)
    if lr <= 0:
        raise InvalidArgumentError(f"learning_rate must be above 0; got {learning_rate!r}")
    batch = _positive_int("batch_size", batch_size)
    if epochs is not None and iterations is not None:
        raise InvalidArgumentError("give epochs or iterations, not both")
    if epochs is not None:
        _positive_int("epochs", epochs)
    if iterations is not None:
        _positive_int("iterations", iterations)
    reg = _finite("l2", l2)
    if reg < 0:
        raise InvalidArgumentError(f"l2 must be 0 or more; got {l2!r}")
    frac = _finite("validation_fraction", validation_fraction)
    if not 0.0 <= frac < 1.0:
        raise InvalidArgumentError(f"validation_fraction must be in [0, 1); got {validation_fraction!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise InvalidArgumentError(f"seed must be a whole number of 0 or more; got {seed!r}")
    return lr, batch, reg, frac, int(seed)


def _class_index(labels: Sequence[Any], n: int,
                 classes: Optional[Sequence[Any]]) -> Tuple[List[str], np.ndarray]:
    """Class names (as the head's labels) and each sample's class index."""
    if isinstance(labels, np.ndarray):
        raw = labels
    else:
        items = list(labels)
        if all(isinstance(v, str) for v in items):
            raw = np.array(items, dtype=str)
        elif all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in items):
            raw = np.array(items, dtype=np.int64)
        else:
            raise InvalidArgumentError("labels must be all whole numbers or all strings")
    if raw.ndim != 1 or raw.shape[0] != n:
        raise InvalidArgumentError(f"{n} embeddings need {n} labels; got labels of shape {list(raw.shape)}")
    if raw.dtype.kind not in "iuU":
        raise InvalidArgumentError("labels must be all whole numbers or all strings")
    if classes is None:
        names = np.unique(raw)
    else:
        try:
            names = np.asarray(list(classes)).astype(raw.dtype)
        except (TypeError, ValueError):
            raise InvalidArgumentError("classes and labels must be of one kind (whole numbers or strings)") from None
        if len(set(names.tolist())) != len(names):
            raise InvalidArgumentError("classes holds a label twice")
        unknown = sorted(set(raw.tolist()) - set(names.tolist()))
        if unknown:
            raise InvalidArgumentError(f"labels {unknown[:5]} are not in classes")
    index = np.searchsorted(np.sort(names), raw)
    order = np.argsort(names, kind="stable")  # position in sorted names -> position in names
    return [str(v) for v in names.tolist()], order[index].astype(np.intp)


def _stratified_split(y: np.ndarray, num_classes: int, fraction: float,
                      rng: np.random.Generator) -> Tuple[np.ndarray, np.ndarray]:
    """Indices of the training and validation splits: ``fraction`` of each class (rounded),
    keeping at least one sample of each class for training."""
    train: List[np.ndarray] = []
    val: List[np.ndarray] = []
    for k in range(num_classes):
        members = np.flatnonzero(y == k)
        members = members[rng.permutation(members.shape[0])]
        take = min(int(round(fraction * members.shape[0])), members.shape[0] - 1)
        val.append(members[:take])
        train.append(members[take:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(val))


class SoftmaxSGD:
    """The state and the one-step update of softmax regression, on preallocated buffers.

    ``step(x, t)`` runs one SGD step on a batch ``x`` ``[B, D]`` float32 with one-hot
    targets ``t`` ``[B, K]`` float32: forward ``Z = x·W + b``, ``P = softmax(Z)``,
    backward ``dW = xᵀ·(P - T)/B + l2·W``, ``db = sum(P - T)/B``, then ``W -= lr·dW``,
    ``b -= lr·db``. The ``1/B`` is folded into the step size and ``l2·W`` into one
    decay factor, so beside the two products a step is a handful of ``[B, K]`` and
    ``[D, K]`` elementwise passes.
    """

    def __init__(self, weights: np.ndarray, bias: np.ndarray, learning_rate: float, l2: float,
                 max_batch: int) -> None:
        self.weights = np.array(weights, dtype=np.float32, order="C", copy=True)
        self.bias = np.array(bias, dtype=np.float32, copy=True)
        d, k = self.weights.shape
        self.learning_rate = float(learning_rate)
        self.l2 = float(l2)
        self._decay = np.float32(1.0 - learning_rate * l2)  # W - lr*l2*W as one scale
        self._z = np.empty((max_batch, k), np.float32)
        self._row = np.empty((max_batch, 1), np.float32)
        self._dw = np.empty((d, k), np.float32)
        self._db = np.empty(k, np.float32)

    def step(self, x: np.ndarray, t: np.ndarray) -> None:
        b = x.shape[0]
        z, row = self._z[:b], self._row[:b]
        np.matmul(x, self.weights, out=z)
        z += self.bias
        np.max(z, axis=1, keepdims=True, out=row)
        z -= row
        np.exp(z, out=z)
        np.sum(z, axis=1, keepdims=True, out=row)
        z /= row  # P
        z -= t  # P - T = B·G
        np.matmul(x.T, z, out=self._dw)
        np.sum(z, axis=0, out=self._db)
        rate = np.float32(self.learning_rate / b)
        if self.l2:
            self.weights *= self._decay
        self._dw *= rate
        self.weights -= self._dw
        self._db *= rate
        self.bias -= self._db

    def evaluate(self, x: np.ndarray, y: np.ndarray) -> Tuple[float, float]:
        """(mean cross-entropy + l2/2·|W|², top-1 accuracy) on ``x``; (NaN, NaN) when empty."""
        if x.shape[0] == 0:
            return float("nan"), float("nan")
        z = (x @ self.weights + self.bias).astype(np.float64)
        accuracy = float(np.mean(np.argmax(z, axis=1) == y))
        z -= z.max(axis=1, keepdims=True)
        log_p = z[np.arange(z.shape[0]), y] - np.log(np.exp(z).sum(axis=1))
        w = self.weights.astype(np.float64)
        loss = float(-log_p.mean() + 0.5 * self.l2 * np.sum(w * w))
        return loss, accuracy


def train(embeddings: np.ndarray, labels: Sequence[Any], *,
          learning_rate: float = DEFAULT_LEARNING_RATE, batch_size: int = DEFAULT_BATCH_SIZE,
          epochs: Optional[int] = None, iterations: Optional[int] = None, l2: float = DEFAULT_L2,
          validation_fraction: float = 0.0, seed: int = 0, warm_start: Optional[LinearHead] = None,
          normalize: bool = True, classes: Optional[Sequence[Any]] = None,
          on_progress: Optional[Callable[[Progress], None]] = None,
          should_stop: Optional[Callable[[], bool]] = None) -> TrainResult:
    """Train a last layer on ``embeddings`` ``[N, D]`` with ``labels`` ``[N]`` (ints or strings).

    Runs ``epochs`` passes over the shuffled training split in batches of ``batch_size``
    (the last batch of an epoch may be smaller; a batch larger than the split is the
    whole split), or ``iterations`` SGD steps when that is given instead (Coral counts
    steps). Default: ``DEFAULT_ITERATIONS`` steps. ``validation_fraction`` of each class
    (seeded, rounded, at least one sample a class kept for training) is held out.
    Classes are ``classes`` in that order, else the sorted distinct labels; the head's
    labels are their ``str``. ``warm_start`` gives the starting weights and bias column
    by column, matched by label (a class it lacks starts at zero; its classes without
    samples are not in the result). ``should_stop`` is asked before every step; when it
    says yes, training ends with the weights so far and ``stopped=True``.
    ``on_progress`` gets a ``Progress`` after every epoch and after a last partial one.

    The same inputs and seed give a bit-identical head on the same machine.

    Raises:
        PreconditionError: no samples, or samples of fewer than two classes.
        InvalidArgumentError: embeddings of the wrong size, NaN or infinite (all-zero
            too when normalizing), labels that do not match them, a warm start of
            another size or feature space, or a bad hyperparameter.
    """
    lr, batch_size, reg, fraction, seed = _check_hyperparameters(
        learning_rate, batch_size, epochs, iterations, l2, validation_fraction, seed)
    x = np.asarray(embeddings, dtype=np.float32)
    if x.ndim >= 1 and x.shape[0] == 0:
        raise PreconditionError("training needs samples of at least two classes; got no samples")
    dim = warm_start.dim if warm_start is not None else (x.shape[-1] if x.ndim == 2 else -1)
    if x.ndim != 2 or x.shape[1] != dim:
        raise InvalidArgumentError(f"training needs embeddings as [N, {dim if dim > 0 else 'D'}]; "
                                   f"got an array of shape {list(x.shape)}")
    if normalize:
        x = l2_normalize(check_embeddings(x, dim))
    elif not np.isfinite(x).all():
        raise InvalidArgumentError("an embedding holds NaN or infinite values")
    names, y = _class_index(labels, x.shape[0], classes)
    present = np.bincount(y, minlength=len(names))
    if np.count_nonzero(present) < 2:
        found = [names[k] for k in np.flatnonzero(present)]
        raise PreconditionError(f"training needs samples of at least two classes; got {x.shape[0]} "
                                f"samples of {len(found)} class ({', '.join(map(repr, found))}). "
                                "Add samples of another class")
    if warm_start is not None and bool(warm_start.normalize) != bool(normalize):
        raise InvalidArgumentError(f"the warm start head works on {'normalized' if warm_start.normalize else 'raw'}"
                                   f" embeddings and training on {'normalized' if normalize else 'raw'} ones")

    num_classes = len(names)
    w0 = np.zeros((dim, num_classes), np.float32)
    b0 = np.zeros(num_classes, np.float32)
    warm_labels: List[str] = []
    if warm_start is not None:
        for k, name in enumerate(names):
            if name in warm_start.labels:
                j = warm_start.labels.index(name)
                w0[:, k] = warm_start.weights[:, j]
                b0[k] = warm_start.bias[j]
                warm_labels.append(name)

    rng = np.random.default_rng(seed)
    train_idx, val_idx = _stratified_split(y, num_classes, fraction, rng)
    x_train, y_train = x[train_idx], y[train_idx]
    x_val, y_val = x[val_idx], y[val_idx]
    n = x_train.shape[0]
    batch_size = min(batch_size, n)
    per_epoch = -(-n // batch_size)
    if epochs is None:
        total_steps = int(iterations) if iterations is not None else DEFAULT_ITERATIONS
        total_epochs = -(-total_steps // per_epoch)
    else:
        total_epochs = int(epochs)
        total_steps = total_epochs * per_epoch

    sgd = SoftmaxSGD(w0, b0, lr, reg, batch_size)
    onehot = np.zeros((n, num_classes), np.float32)
    onehot[np.arange(n), y_train] = 1.0
    shuffled_x = np.empty_like(x_train)
    shuffled_t = np.empty_like(onehot)
    history: List[Progress] = []
    step = 0
    stopped = False

    def report(epoch: int) -> None:
        loss, train_acc = sgd.evaluate(x_train, y_train)
        _, val_acc = sgd.evaluate(x_val, y_val)
        progress = Progress(epoch, total_epochs, loss, train_acc, val_acc, step)
        history.append(progress)
        if on_progress is not None:
            on_progress(progress)

    for epoch in range(1, total_epochs + 1):
        order = rng.permutation(n)
        np.take(x_train, order, axis=0, out=shuffled_x)
        np.take(onehot, order, axis=0, out=shuffled_t)
        stepped = False
        for start in range(0, n, batch_size):
            if step >= total_steps:
                break
            if should_stop is not None and should_stop():
                stopped = True
                break
            sgd.step(shuffled_x[start:start + batch_size], shuffled_t[start:start + batch_size])
            step += 1
            stepped = True
        if stepped:
            report(epoch)
        if stopped or step >= total_steps:
            break

    info: Dict[str, Any] = {
        "method": "softmax_regression", "learning_rate": lr, "batch_size": batch_size,
        "epochs": total_epochs, "iterations": step, "l2": reg, "validation_fraction": fraction,
        "seed": seed, "normalize": bool(normalize), "stopped": stopped, "warm_start": warm_labels,
        "samples": {names[k]: int(present[k]) for k in range(num_classes)},
        "train_samples": int(n), "validation_samples": int(x_val.shape[0]),
    }
    if history:
        last = history[-1]
        info.update(loss=last.loss, train_accuracy=last.train_accuracy,
                    validation_accuracy=None if math.isnan(last.validation_accuracy) else last.validation_accuracy)
    head = LinearHead(sgd.weights, sgd.bias, tuple(names), ("trained",) * num_classes,
                      bool(normalize), info)
    return TrainResult(head=head, history=history, stopped=stopped)


__all__ = ["DEFAULT_BATCH_SIZE", "DEFAULT_ITERATIONS", "DEFAULT_L2", "DEFAULT_LEARNING_RATE", "Progress",
           "SoftmaxSGD", "TrainResult", "train"]
