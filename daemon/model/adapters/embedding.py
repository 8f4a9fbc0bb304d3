"""Embedding: the first output as a feature vector (what imprinting and the learned heads read)."""
from __future__ import annotations

from typing import Sequence

import numpy as np

from edgetpud.hal.executor import TensorSpec

from .common import check_outputs, dequantize


def embed(outputs: Sequence[np.ndarray], specs: Sequence[TensorSpec], normalize: bool = False) -> np.ndarray:
    """The first output as a dequantized 1-D float32 vector, optionally scaled to unit L2 norm.

    An all-zero vector stays zero when normalised.

    Raises:
        ModelError: the model has no outputs.
    """
    check_outputs(outputs, specs, "embed")
    vector = dequantize(outputs[0], specs[0]).reshape(-1)
    if normalize:
        norm = float(np.linalg.norm(vector))
        if norm > 0:
            vector = vector / np.float32(norm)
    return vector.astype(np.float32)
