"""Pixels that arrive raw: numpy arrays, camera frames (rows of ``stride`` bytes), and crops of either.

Every function returns a view on the caller's memory (maybe strided, maybe
read-only): converting a whole BGRA or padded frame first (about 1 ms for
640x480) is wasted work when the resize reads only some of its pixels. A caller
that keeps or writes the pixels copies them.
"""
from __future__ import annotations

from typing import Any, Optional

import numpy as np

from edgetpud.daemon.errors import ImageError

from ._checks import is_int

_FRAME_CHANNELS = {"RGB": 3, "BGR": 3, "RGBA": 4, "BGRA": 4, "GRAY": 1}


def as_image_array(array: Any) -> np.ndarray:
    """Validate a raw HxWxC uint8 array (C = 1, 3 or 4) and view it as HxWx3 uint8 RGB.

    A single channel is broadcast, a fourth (alpha) channel is sliced off.

    Raises:
        ImageError: not an ndarray, not uint8, not 3-D, an unsupported channel count, or empty.
    """
    if not isinstance(array, np.ndarray):
        raise ImageError(f"expected a numpy array, got {type(array).__name__}")
    if array.dtype != np.uint8:
        raise ImageError(f"a raw image must have dtype uint8, got {array.dtype}")
    if array.ndim != 3 or array.shape[2] not in (1, 3, 4):
        raise ImageError(
            f"a raw image must have shape HxWxC with C in (1, 3, 4), got {list(array.shape)} "
            "(pass a grayscale image as HxWx1)"
        )
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise ImageError(f"a raw image must have pixels, got shape {list(array.shape)}")
    if array.shape[2] == 1:
        return np.broadcast_to(array, (array.shape[0], array.shape[1], 3))
    return array[:, :, :3]


def frame_to_rgb(
    buffer: Any,
    width: int,
    height: int,
    stride: Optional[int] = None,
    pixel_format: str = "RGB",
) -> np.ndarray:
    """View one raw camera frame as HxWx3 uint8 RGB (on ``buffer``: maybe strided, read-only).

    ``stride`` defaults to ``width * bytes_per_pixel``; padding at the end of each
    row is skipped. The buffer must hold exactly ``stride * height`` bytes.

    Raises:
        ImageError: unknown pixel format, bad dimensions, a stride shorter than a
            row, or a buffer of the wrong size.
    """
    fmt = str(pixel_format).upper()
    if fmt not in _FRAME_CHANNELS:
        raise ImageError(f"unknown pixel format {pixel_format!r}; expected one of {', '.join(_FRAME_CHANNELS)}")
    bpp = _FRAME_CHANNELS[fmt]
    if not is_int(width) or not is_int(height) or width <= 0 or height <= 0:
        raise ImageError(f"frame width and height must be positive integers, got {width}x{height}")
    row = int(width) * bpp
    stride = row if stride is None else stride
    if not is_int(stride) or stride < row:
        raise ImageError(f"stride {stride} is shorter than a row of {width} {fmt} pixels ({row} bytes)")
    try:
        flat = np.frombuffer(buffer, dtype=np.uint8) if not isinstance(buffer, np.ndarray) else buffer
    except (TypeError, ValueError) as exc:
        raise ImageError(f"a frame buffer must be bytes-like, got {type(buffer).__name__}") from exc
    if flat.dtype != np.uint8:
        raise ImageError(f"a frame buffer must hold uint8 bytes, got {flat.dtype}")
    flat = flat.reshape(-1)
    expected = int(stride) * int(height)
    if flat.size != expected:
        raise ImageError(
            f"frame buffer holds {flat.size} bytes; {width}x{height} {fmt} with stride {stride} needs {expected}"
        )
    pixels = flat.reshape(int(height), int(stride))[:, :row].reshape(int(height), int(width), bpp)
    if fmt == "RGB":
        return pixels
    if fmt == "BGR":
        return pixels[:, :, ::-1]
    if fmt == "RGBA":
        return pixels[:, :, :3]
    if fmt == "BGRA":
        return pixels[:, :, 2::-1]
    return np.broadcast_to(pixels, (int(height), int(width), 3))


def crop(image: np.ndarray, x: int, y: int, w: int, h: int) -> np.ndarray:
    """View the ``w`` x ``h`` region whose top-left corner is (``x``, ``y``).

    Raises:
        ImageError: the region is empty or does not lie inside the image.
    """
    if not isinstance(image, np.ndarray) or image.ndim < 2:
        raise ImageError("crop needs an HxW[xC] numpy array")
    if not all(is_int(v) for v in (x, y, w, h)):
        raise ImageError(f"crop coordinates must be integers, got {(x, y, w, h)}")
    height, width = image.shape[:2]
    if w <= 0 or h <= 0 or x < 0 or y < 0 or x + w > width or y + h > height:
        raise ImageError(f"crop region x={x} y={y} w={w} h={h} is empty or outside the {width}x{height} image")
    return image[y : y + h, x : x + w]
