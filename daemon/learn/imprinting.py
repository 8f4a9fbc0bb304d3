"""Weight imprinting: a class's weight is the normalized mean of its samples' normalized embeddings.

Each class keeps running sums (``ClassSums``), so adding a sample never needs the
earlier ones, and classes can be added or removed at any time. It works on any
embedding model: the head is a ``LinearHead`` on the L2-normalized embedding, so
its logits are ``DEFAULT_SCALE`` times the cosine similarity to each class.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Iterator, Mapping, Optional

import numpy as np

from edgetpud.daemon.errors import (InvalidArgumentError, NotFoundError, PreconditionError,
                                    ResourceExhaustedError)

from .head import NORM_EPSILON, LinearHead, l2_normalize

#: Coral's imprinting API takes at most this many samples a class.
MAX_SAMPLES_PER_CLASS = 200
#: Samples one AddSamples call may carry: the daemon holds a call's samples in memory until it commits them.
MAX_SAMPLES_PER_CALL = 4 * MAX_SAMPLES_PER_CLASS

#: The scale ``s`` of an imprinted head: ``scores = softmax(s * cos(e, w_c))``.
#:
#: A cosine lies in [-1, 1] (in [0, 1] for the post-ReLU embeddings of a MobileNet), so
#: without a scale every logit gap is below 2 and even a perfect match gets a flat score
#: (two classes at cos 1.0 and 0.0: 0.73). Too large a scale saturates: every sample,
#: however far from all classes, gets a top score near 1 and "unsure" can no longer be
#: told from "sure". ``s = 10`` sits between the two, tested in
#: ``tests/test_learn_imprinting.py``:
#:
#: - a sample whose cosine to its class beats every other class's by 0.5 gets a top
#:   score above 0.9 among 10 classes (``1 / (1 + 9 e^-5) = 0.94``);
#: - a sample whose cosines to its two nearest classes differ by 0.1 or less gets at
#:   most ``1 / (1 + e^-1) = 0.73``: an ambiguous sample stays visibly ambiguous;
#: - the widest logit range is ``2 s = 20``: quantized to uint8 (as an exported head's
#:   logits are), a step is 0.08, a cosine step of 0.008.
DEFAULT_SCALE = 10.0


def check_embeddings(embeddings: np.ndarray, dim: int) -> np.ndarray:
    """Embeddings as float32 ``[N, D]``, refused when they cannot be learned from.

    Raises:
        InvalidArgumentError: the wrong size, NaN or infinite values, or an all-zero vector.
    """
    x = np.asarray(embeddings, dtype=np.float32)
    if x.ndim == 1:
        x = x.reshape(1, -1)
    if x.ndim != 2 or x.shape[1] != dim or x.shape[0] == 0:
        raise InvalidArgumentError(f"an embedding of this model has {dim} values; got an array of shape "
                                   f"{list(np.shape(embeddings))}")
    if not np.isfinite(x).all():
        raise InvalidArgumentError("an embedding holds NaN or infinite values")
    if (np.linalg.norm(x, axis=1) <= NORM_EPSILON).any():
        raise InvalidArgumentError("an embedding is all zeros: it has no direction to imprint")
    return x


@dataclass
class ClassSums:
    """The running state of one imprinted class."""

    count: int
    normalized_sum: np.ndarray  # float64 [D]: the sum of e/|e| over the class's samples
    raw_sum: np.ndarray  # float64 [D]: the sum of e (what calibration against pretrained logits needs)

    @classmethod
    def empty(cls, dim: int) -> "ClassSums":
        return cls(0, np.zeros(dim, np.float64), np.zeros(dim, np.float64))

    def add(self, embeddings: np.ndarray) -> None:
        """Fold ``[N, D]`` checked embeddings in.

        Rows are added one after another, so N samples at once give bit for bit the
        same sums as the same samples one call each (a restart replaying the store
        one sample at a time rebuilds the very same head).
        """
        x = np.asarray(embeddings, dtype=np.float64).reshape(-1, self.normalized_sum.shape[0])
        unit = l2_normalize(x).astype(np.float64)
        for row, unit_row in zip(x, unit):
            self.normalized_sum += unit_row
            self.raw_sum += row
        self.count += int(x.shape[0])

    @property
    def direction(self) -> np.ndarray:
        """The imprinted weight: the unit vector along the mean normalized embedding (float32 [D])."""
        return l2_normalize(self.normalized_sum.astype(np.float32))


def imprinted_classes(samples: Mapping[str, np.ndarray], dim: int) -> Dict[str, ClassSums]:
    """``ClassSums`` per label from ``label -> [N, D]`` embeddings (checked)."""
    out: Dict[str, ClassSums] = {}
    for label, x in samples.items():
        sums = ClassSums.empty(dim)
        sums.add(check_embeddings(x, dim))
        out[label] = sums
    return out


def imprint_head(classes: Mapping[str, ClassSums], scale: float = DEFAULT_SCALE) -> LinearHead:
    """The imprinted head of ``classes``: column ``c`` is ``scale * direction_c``, bias 0.

    Labels keep the mapping's insertion order (the order classes were added in).

    Raises:
        PreconditionError: no classes, or a class without samples (no direction yet).
        InvalidArgumentError: a scale that is not a positive finite number, or classes of
            different embedding sizes.
    """
    numeric = isinstance(scale, (int, float, np.integer, np.floating)) and not isinstance(scale, bool)
    s = float(scale) if numeric else float("nan")
    if not (np.isfinite(s) and s > 0):
        raise InvalidArgumentError(f"the imprinting scale must be a positive number; got {scale!r}")
    if not classes:
        raise PreconditionError("imprinting needs at least one class with samples; add samples first")
    labels = list(classes)
    dims = {int(classes[label].normalized_sum.shape[0]) for label in labels}
    if len(dims) != 1:
        raise InvalidArgumentError(f"the classes hold embeddings of different sizes {sorted(dims)}")
    empty = [label for label in labels if classes[label].count <= 0]
    if empty:
        raise PreconditionError(f"class(es) {empty} have no samples, so no direction to imprint; "
                                "add samples or remove the class")
    weights = np.stack([classes[label].direction for label in labels], axis=1) * np.float32(s)
    counts = {label: int(classes[label].count) for label in labels}
    return LinearHead(weights=weights, bias=np.zeros(len(labels), np.float32), labels=tuple(labels),
                      sources=("imprinted",) * len(labels), normalize=True,
                      info={"method": "imprinting", "scale": s, "samples": counts})


class Imprinter:
    """Imprinted classes of one embedding model, kept as running sums.

    ``add`` checks everything before it changes anything, so a refused call leaves
    the classes as they were.
    """

    def __init__(self, dim: int, max_samples_per_class: int = MAX_SAMPLES_PER_CLASS,
                 scale: float = DEFAULT_SCALE) -> None:
        if int(dim) <= 0:
            raise InvalidArgumentError(f"an embedding size must be positive; got {dim}")
        self.dim = int(dim)
        self.max_samples_per_class = int(max_samples_per_class)
        self.scale = float(scale)
        self._classes: Dict[str, ClassSums] = {}

    def add(self, label: str, embeddings: np.ndarray) -> int:
        """Fold ``[N, D]`` (or one ``[D]``) embeddings into ``label``; returns its new count.

        Raises:
            InvalidArgumentError: a label that is not a non-empty string, or embeddings
                ``check_embeddings`` refuses.
            ResourceExhaustedError: the class would pass ``max_samples_per_class``.
        """
        if not isinstance(label, str) or not label:
            raise InvalidArgumentError(f"a class label must be a non-empty string; got {label!r}")
        x = check_embeddings(embeddings, self.dim)
        sums = self._classes.get(label)
        have = sums.count if sums is not None else 0
        if have + x.shape[0] > self.max_samples_per_class:
            raise ResourceExhaustedError(
                f"class {label!r} has {have} samples; {x.shape[0]} more would pass the cap of "
                f"{self.max_samples_per_class} samples a class. Remove the class to start it again, "
                "or train by backpropagation for classes that need more samples")
        if sums is None:
            sums = self._classes[label] = ClassSums.empty(self.dim)
        sums.add(x)
        return sums.count

    def remove(self, label: str) -> None:
        """Raises: NotFoundError: no class ``label``."""
        if label not in self._classes:
            known = ", ".join(repr(k) for k in self._classes) or "none"
            raise NotFoundError(f"no imprinted class {label!r} (classes: {known})")
        del self._classes[label]

    def counts(self) -> Dict[str, int]:
        """Samples a class, in the order classes were added."""
        return {label: sums.count for label, sums in self._classes.items()}

    @property
    def classes(self) -> Mapping[str, ClassSums]:
        return self._classes

    def __len__(self) -> int:
        return len(self._classes)

    def __iter__(self) -> Iterator[str]:
        return iter(self._classes)

    def head(self, scale: Optional[float] = None) -> LinearHead:
        """The imprinted head of the classes so far (see ``imprint_head``)."""
        return imprint_head(self._classes, self.scale if scale is None else scale)


__all__ = ["DEFAULT_SCALE", "MAX_SAMPLES_PER_CLASS", "ClassSums", "Imprinter", "check_embeddings",
           "imprint_head", "imprinted_classes"]
