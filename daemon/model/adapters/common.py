"""What every task's postprocessing shares: dequantizing outputs and checking the caller's options."""
from __future__ import annotations

from typing import Sequence

import numpy as np

from edgetpud.daemon.errors import InvalidArgumentError, ModelError
from edgetpud.hal.executor import TensorSpec


def dequantize(array: np.ndarray, spec: TensorSpec) -> np.ndarray:
    """Real values of a tensor: ``(q - zero_point) * scale`` for quantized tensors, else float32."""
    if spec.scale:
        return ((np.asarray(array, dtype=np.float32) - np.float32(spec.zero_point)) * np.float32(spec.scale))
    return np.asarray(array, dtype=np.float32)


def check_top_k(top_k: int, threshold: float) -> None:
    """Refuse options that would silently return nothing or everything.

    Raises:
        InvalidArgumentError: ``top_k`` is not a positive integer, or the threshold is not finite.
    """
    if isinstance(top_k, bool) or not isinstance(top_k, (int, np.integer)) or top_k < 1:
        raise InvalidArgumentError(f"top_k must be a positive integer, got {top_k!r}")
    if not np.isfinite(threshold):
        raise InvalidArgumentError(f"threshold must be a finite number, got {threshold!r}")


def check_outputs(outputs: Sequence[np.ndarray], specs: Sequence[TensorSpec], task: str) -> None:
    """Raises: ModelError: the arrays do not match the model's outputs, or it has none."""
    if len(outputs) != len(specs):
        raise ModelError(f"{task}: the model produced {len(outputs)} output(s) but declares {len(specs)}")
    if not specs:
        raise ModelError(f"{task}: the model has no outputs")
