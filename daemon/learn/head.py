"""``LinearHead``: the one shape every learned last layer takes.

An imprinted head, a head trained by softmax regression and a classifier's
pretrained head with imprinted classes beside it are all ``logits = x · W + b``,
where ``x`` is the base model's embedding, L2-normalized first when ``normalize``
is set, and scores are ``softmax(logits)``. Keeping one form means one way to
serve, store and export a head, whatever made it.
"""
from __future__ import annotations

import io
import json
from dataclasses import dataclass, field
from typing import Any, Dict, Sequence, Tuple

import numpy as np

#: Where a class of a head came from.
SOURCES = ("pretrained", "imprinted", "trained")

#: Embeddings whose L2 norm is below this are treated as all-zero (no direction to compare).
NORM_EPSILON = 1e-12


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax, stable for large logits."""
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return (e / e.sum(axis=-1, keepdims=True)).astype(np.float32)


def l2_normalize(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm (an all-zero row stays zero)."""
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=-1, keepdims=True)
    return x / np.maximum(norms, NORM_EPSILON)


@dataclass(frozen=True)
class LinearHead:
    """A last layer: ``softmax((normalize ? x/|x| : x) · weights + bias)``.

    ``weights`` is float32 ``[D, K]`` and ``bias`` float32 ``[K]``; class ``k`` is
    ``labels[k]``, made by ``sources[k]`` (one of ``SOURCES``). ``info`` holds what
    made the head (method, hyperparameters, calibration) for listing and export.
    """

    weights: np.ndarray
    bias: np.ndarray
    labels: Tuple[str, ...]
    sources: Tuple[str, ...]
    normalize: bool
    info: Dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        w = np.ascontiguousarray(self.weights, dtype=np.float32)
        b = np.ascontiguousarray(self.bias, dtype=np.float32).reshape(-1)
        if w.ndim != 2 or b.shape[0] != w.shape[1]:
            raise ValueError(f"a head needs weights [D, K] and bias [K], got {w.shape} and {b.shape}")
        if len(self.labels) != w.shape[1] or len(self.sources) != w.shape[1]:
            raise ValueError(f"a head of {w.shape[1]} classes needs as many labels and sources")
        if not (np.isfinite(w).all() and np.isfinite(b).all()):
            raise ValueError("a head's weights and bias must be finite")
        unknown = sorted(set(self.sources) - set(SOURCES))
        if unknown:
            raise ValueError(f"unknown class source(s) {unknown}; expected {', '.join(SOURCES)}")
        w.setflags(write=False)
        b.setflags(write=False)
        object.__setattr__(self, "weights", w)
        object.__setattr__(self, "bias", b)
        object.__setattr__(self, "labels", tuple(str(x) for x in self.labels))
        object.__setattr__(self, "sources", tuple(str(x) for x in self.sources))

    @property
    def dim(self) -> int:
        """Embedding size D."""
        return int(self.weights.shape[0])

    @property
    def num_classes(self) -> int:
        return int(self.weights.shape[1])

    def features(self, embeddings: np.ndarray) -> np.ndarray:
        """What the linear layer sees: embeddings as ``[N, D]`` float32, normalized when the head says so."""
        x = np.asarray(embeddings, dtype=np.float32).reshape(-1, self.dim)
        return l2_normalize(x) if self.normalize else x

    def logits(self, embeddings: np.ndarray) -> np.ndarray:
        """``[N, K]`` logits of ``[N, D]`` (or one ``[D]``) embeddings."""
        return self.features(embeddings) @ self.weights + self.bias

    def scores(self, embeddings: np.ndarray) -> np.ndarray:
        """``[N, K]`` class probabilities."""
        return softmax(self.logits(embeddings))

    def to_bytes(self) -> bytes:
        """NumPy's ``.npz`` form (arrays plus a JSON document): what the store keeps."""
        meta = {"labels": list(self.labels), "sources": list(self.sources),
                "normalize": bool(self.normalize), "info": self.info}
        out = io.BytesIO()
        np.savez(out, weights=self.weights, bias=self.bias,
                 meta=np.frombuffer(json.dumps(meta).encode("utf-8"), dtype=np.uint8))
        return out.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> "LinearHead":
        """Raises: ValueError: not a head written by ``to_bytes``."""
        try:
            with np.load(io.BytesIO(data), allow_pickle=False) as z:
                meta = json.loads(bytes(z["meta"]).decode("utf-8"))
                return cls(weights=z["weights"], bias=z["bias"], labels=tuple(meta["labels"]),
                           sources=tuple(meta["sources"]), normalize=bool(meta["normalize"]),
                           info=dict(meta.get("info") or {}))
        except (OSError, KeyError, TypeError, ValueError, json.JSONDecodeError) as exc:
            raise ValueError(f"not a stored head: {exc}") from None

    def with_classes(self, labels: Sequence[str]) -> "LinearHead":
        """The same head restricted to ``labels`` (in that order)."""
        index = [self.labels.index(label) for label in labels]
        return LinearHead(self.weights[:, index], self.bias[index], tuple(labels),
                          tuple(self.sources[i] for i in index), self.normalize, dict(self.info))
