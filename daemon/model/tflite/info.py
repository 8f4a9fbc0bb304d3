"""What the reader tells callers of one tensor, operator or signature (frozen snapshots)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, Optional, Tuple

import numpy as np


@dataclass(frozen=True)
class TensorInfo:
    """One tensor as a caller needs it: shape, dtype and quantization in plain Python/numpy."""

    index: int
    name: str
    shape: Tuple[int, ...]
    shape_signature: Tuple[int, ...]
    dtype: np.dtype
    scale: float
    zero_point: int
    scales: np.ndarray = field(repr=False, compare=False)
    zero_points: np.ndarray = field(repr=False, compare=False)
    quantized_dimension: int
    is_constant: bool
    buffer: int
    type_name: str = "FLOAT32"
    is_variable: bool = False

    @property
    def quantized(self) -> bool:
        return self.scales.size > 0 and bool(np.any(self.scales != 0))

    @property
    def per_channel(self) -> bool:
        return self.scales.size > 1

    @property
    def is_dynamic(self) -> bool:
        return any(d < 0 for d in self.shape_signature)


@dataclass(frozen=True)
class OperatorInfo:
    """One operator: its resolved opcode name and the live options object of the schema."""

    index: int
    opcode: str  # builtin name ("CONV_2D") or the custom code ("edgetpu-custom-op")
    builtin: bool
    version: int
    inputs: Tuple[int, ...]
    outputs: Tuple[int, ...]
    options: Any = field(default=None, compare=False)  # a schema *OptionsT object or None
    custom_options: Optional[bytes] = field(default=None, repr=False, compare=False)
    builtin_code: int = 0
    opcode_index: int = 0
    intermediates: Tuple[int, ...] = ()


@dataclass(frozen=True)
class SignatureInfo:
    """A signature def: a key, its subgraph and its named input/output tensor indices."""

    key: str
    subgraph: int
    inputs: Dict[str, int]
    outputs: Dict[str, int]
