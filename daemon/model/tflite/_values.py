"""Plain Python values out of the object API's fields (bytes or str, None or numpy arrays)."""
from __future__ import annotations

from typing import Any, Sequence, Tuple, Union

import numpy as np


def text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).decode("utf-8", errors="replace")
    return str(value)


def ints(values: Any) -> Tuple[int, ...]:
    if values is None:
        return ()
    return tuple(int(v) for v in values)


def bytes_of(data: Any) -> bytes:
    if data is None:
        return b""
    if isinstance(data, np.ndarray):
        return data.tobytes()
    return bytes(bytearray(data))


def u8(data: Union[bytes, bytearray, memoryview, np.ndarray, Sequence[int]]) -> np.ndarray:
    """Store buffer bytes as a 1-D uint8 array: the object API packs those in one copy."""
    if isinstance(data, np.ndarray):
        return np.frombuffer(np.ascontiguousarray(data).tobytes(), dtype=np.uint8)
    if isinstance(data, (bytes, bytearray, memoryview)):
        return np.frombuffer(bytes(data), dtype=np.uint8)
    return np.asarray(list(data), dtype=np.uint8)


def buffer_size(model: Any, index: int) -> int:
    """How many bytes buffer ``index`` of a ``ModelT`` holds (0 for activations and missing buffers)."""
    if not (0 <= index < len(model.buffers)):
        return 0
    data = model.buffers[index].data
    return 0 if data is None else int(np.size(data))
