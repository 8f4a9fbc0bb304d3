"""Resized pixels to an input tensor: the image size a tensor wants, its channels, and quantization."""
from __future__ import annotations

from typing import Sequence, Tuple, Union

import numpy as np

from edgetpud.daemon.errors import ImageError
from edgetpud.hal.executor import TensorSpec


def _per_channel(value: Union[float, Sequence[float], None], default: float, name: str) -> np.ndarray:
    if value is None:
        return np.asarray(default, dtype=np.float64)
    try:
        array = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ImageError(f"{name} must be a number or a list of numbers, got {value!r}") from exc
    if array.ndim > 1 or not np.all(np.isfinite(array)):
        raise ImageError(f"{name} must be a finite number or a list of finite numbers, got {value!r}")
    return array


def quantize(real: np.ndarray, spec: TensorSpec) -> np.ndarray:
    """Convert real values to ``spec``'s dtype using its scale and zero point (rounded, saturated).

    Raises:
        ImageError: the tensor's dtype is not an integer or float type.
    """
    dtype = np.dtype(spec.dtype)
    values = np.asarray(real, dtype=np.float64)
    if dtype.kind == "f":
        return values.astype(dtype)
    if dtype.kind not in "iu":
        raise ImageError(f"input '{spec.name}' has dtype {dtype.name}, which images cannot be converted to")
    if spec.scale:
        values = np.rint(values / spec.scale) + spec.zero_point
    else:
        values = np.rint(values)
    info = np.iinfo(dtype)
    return np.clip(values, info.min, info.max).astype(dtype)


def quantize_input(
    pixels: np.ndarray,
    spec: TensorSpec,
    mean: Union[float, Sequence[float], None] = None,
    std: Union[float, Sequence[float], None] = None,
) -> np.ndarray:
    """Turn resized pixels (0..255, uint8 or float) into the input tensor ``spec`` describes.

    With ``mean``/``std`` the model sees ``(pixel - mean) / std`` (per channel if
    lists), quantized with the tensor's scale and zero point. Without them, a
    quantized uint8 input gets the pixels unchanged and an int8 input gets
    ``pixel - 128`` (Coral's convention: the quantization already encodes the
    normalisation); a float input gets the pixel values as floats. A batch axis is
    added when the tensor has one.

    Raises:
        ImageError: the pixels do not fit the tensor's shape, bad mean/std, or an
            unsupported dtype.
    """
    if not isinstance(pixels, np.ndarray) or pixels.dtype.kind not in "uif":
        raise ImageError("pixels must be a numeric numpy array")
    shape = tuple(spec.shape)
    data = pixels
    if data.ndim == len(shape) - 1 and len(shape) >= 1 and shape[0] == 1:
        data = data[None, ...]
    if tuple(data.shape) != shape:
        raise ImageError(
            f"the image has shape {list(pixels.shape)} but input '{spec.name}' needs {list(shape)}"
        )
    dtype = np.dtype(spec.dtype)
    if mean is None and std is None:
        if dtype == np.uint8 and data.dtype == np.uint8:
            return np.ascontiguousarray(data)
        if dtype == np.int8:
            shifted = np.rint(data.astype(np.float64)) - 128
            return np.clip(shifted, -128, 127).astype(np.int8)
        if dtype.kind == "f":
            return data.astype(dtype)
        if dtype.kind == "u" and data.dtype.kind == "f":
            return np.clip(np.rint(data), 0, np.iinfo(dtype).max).astype(dtype)
    mean_a = _per_channel(mean, 0.0, "mean")
    std_a = _per_channel(std, 1.0, "std")
    if np.any(std_a == 0):
        raise ImageError("std must not be zero")
    channels = shape[-1] if shape else 1
    for name, array in (("mean", mean_a), ("std", std_a)):
        if array.ndim == 1 and array.size not in (1, channels):
            raise ImageError(f"{name} has {array.size} values but input '{spec.name}' has {channels} channels")
    if dtype == np.uint8 and data.dtype == np.uint8 and spec.scale and _is_identity(mean_a, std_a, spec):
        return np.ascontiguousarray(data)  # the quantization is exactly this normalisation
    real = (data.astype(np.float64) - mean_a) / std_a
    return quantize(real, spec)


def _is_identity(mean: np.ndarray, std: np.ndarray, spec: TensorSpec) -> bool:
    return bool(np.all(np.abs(mean - spec.zero_point) < 1e-6) and np.all(np.abs(std * spec.scale - 1.0) < 1e-6))


def input_size(spec: TensorSpec) -> Tuple[int, int]:
    """The (height, width) an NHWC image input expects.

    Raises:
        ImageError: the tensor is not shaped like an image.
    """
    shape = tuple(spec.shape)
    if len(shape) == 4 and shape[0] == 1 and shape[3] in (1, 3) and shape[1] > 0 and shape[2] > 0:
        return int(shape[1]), int(shape[2])
    if len(shape) == 3 and shape[2] in (1, 3):
        return int(shape[0]), int(shape[1])
    raise ImageError(f"input '{spec.name}' with shape {list(shape)} is not an image input (1xHxWx3)")


def to_channels(image: np.ndarray, channels: int) -> np.ndarray:
    """Adapt an HxWx3 RGB image to a model input with ``channels`` channels (1 = luminance).

    Raises:
        ImageError: the model wants a channel count other than 1 or 3.
    """
    if channels == 3:
        return image
    if channels == 1:
        luma = image.astype(np.float32) @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
        return np.clip(np.rint(luma), 0, 255).astype(np.uint8)[:, :, None]
    raise ImageError(f"images can feed inputs with 1 or 3 channels, not {channels}")
