"""Weight imprinting: a class's weight is the normalized mean of its samples' normalized embeddings.

Each class keeps running sums (``ClassSums``), so adding a sample never needs the
earlier ones, and classes can be added or removed at any time.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Mapping

import numpy as np

from edgetpud.daemon.errors import InvalidArgumentError

from .head import NORM_EPSILON, l2_normalize

#: Coral's imprinting API takes at most this many samples a class.
MAX_SAMPLES_PER_CLASS = 200


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
        """Fold ``[N, D]`` checked embeddings in."""
        x = np.asarray(embeddings, dtype=np.float64)
        self.count += int(x.shape[0])
        self.normalized_sum += l2_normalize(x).astype(np.float64).sum(axis=0)
        self.raw_sum += x.sum(axis=0)

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


__all__ = ["MAX_SAMPLES_PER_CLASS", "ClassSums", "check_embeddings", "imprinted_classes"]
