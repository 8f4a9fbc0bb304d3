"""Resizing as TensorFlow does it (bilinear, nearest, letterbox), and the transform that maps boxes back.

Why this is hand-written rather than Pillow's ``resize``: a model's accuracy
depends on being fed the way it was evaluated. Coral's models were evaluated with
TensorFlow's bilinear resize (half-pixel centres, no antialiasing, truncated to
uint8); Pillow's BILINEAR antialiases when shrinking and costs mobilenet_v1_0.25
most of its score. So resizing is done here in numpy. It reads views (a frame's
channels, a crop, a decoded image in Pillow's memory) without copying them first,
and always returns a new array.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Optional, Tuple

import numpy as np

from edgetpud.daemon.errors import ImageError

from ._checks import is_int

#: Resize methods a bundle may ask for.
RESIZE_METHODS: Tuple[str, ...] = ("bilinear", "nearest", "letterbox")


@dataclass(frozen=True)
class ImageTransform:
    """How a region of the source image was placed in the model input, to map boxes back.

    A source pixel ``(sx, sy)`` of the region lands at input pixel
    ``(pad_x + (sx - region_x) * scale_x, pad_y + (sy - region_y) * scale_y)``.
    """

    source_width: int
    source_height: int
    input_width: int
    input_height: int
    scale_x: float
    scale_y: float
    pad_x: int = 0
    pad_y: int = 0
    region_x: int = 0
    region_y: int = 0
    region_width: int = 0
    region_height: int = 0

    def box_to_source(self, ymin: float, xmin: float, ymax: float, xmax: float) -> Tuple[float, float, float, float]:
        """Map a normalised (ymin, xmin, ymax, xmax) box to source pixels (xmin, ymin, xmax, ymax), clipped."""
        rw = self.region_width or self.source_width
        rh = self.region_height or self.source_height

        def to_x(v: float) -> float:
            sx = (v * self.input_width - self.pad_x) / self.scale_x
            return float(min(max(sx, 0.0), rw) + self.region_x)

        def to_y(v: float) -> float:
            sy = (v * self.input_height - self.pad_y) / self.scale_y
            return float(min(max(sy, 0.0), rh) + self.region_y)

        x0, x1 = sorted((to_x(xmin), to_x(xmax)))
        y0, y1 = sorted((to_y(ymin), to_y(ymax)))
        return (x0, y0, x1, y1)


@functools.lru_cache(maxsize=64)
def _bilinear_axis(in_size: int, out_size: int) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Source indices and weights along one axis, as TensorFlow computes them (half-pixel centres).

    Cached (read-only arrays): a daemon sees the same few frame and model sizes over and over.
    """
    scale = in_size / out_size
    src = (np.arange(out_size, dtype=np.float64) + 0.5) * scale - 0.5
    floor = np.floor(src)
    lower = np.maximum(floor, 0).astype(np.intp)
    upper = np.minimum(np.ceil(src), in_size - 1).astype(np.intp)
    weight = src - floor
    for array in (lower, upper, weight):
        array.setflags(write=False)
    return lower, upper, weight


@dataclass(frozen=True)
class _BilinearTables:
    """Where the four neighbours of every output pixel are, and the weights, for one (source, target) size.

    ``rows`` (1, 2, H, 1) and ``cols`` (2, 1, 1, W) index a strided image; ``flat`` (2, 2, H, W)
    indexes the pixels of a C-contiguous one (``[left|right][top|bottom]``). ``wx`` is (W, 1),
    ``wy`` (H, 1, 1).
    """

    rows: np.ndarray
    cols: np.ndarray
    flat: np.ndarray
    wx: np.ndarray
    wy: np.ndarray


@functools.lru_cache(maxsize=16)
def _bilinear_tables(in_h: int, in_w: int, height: int, width: int) -> _BilinearTables:
    """Cached per size pair; int32 pixel indices keep an entry under 1 MB for a 224x224 input."""
    y0, y1, wy = _bilinear_axis(in_h, height)
    x0, x1, wx = _bilinear_axis(in_w, width)
    rows = np.stack([y0, y1])[None, :, :, None]
    cols = np.stack([x0, x1])[:, None, None, :]
    index = np.int32 if in_h * in_w < 2**31 else np.intp
    flat = (rows * in_w + cols).astype(index)
    tables = _BilinearTables(rows, cols, flat, wx[:, None], wy[:, None, None])
    for array in (tables.rows, tables.cols, tables.flat, tables.wx, tables.wy):
        array.setflags(write=False)
    return tables


def resize_bilinear(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """TensorFlow-style bilinear resize: half-pixel centres, no antialiasing, truncated to uint8.

    Equivalent to ``tf.cast(tf.image.resize(img, (h, w), "bilinear"), tf.uint8)``. The
    arithmetic is float64 so that results which are whole numbers stay whole before
    truncation (float32 turns some 255.0 into 254.99998 -> 254); this reproduces
    Coral's reference scores exactly.

    The four neighbours of every output pixel are gathered in one ``take`` (index
    tables cached per size pair) and interpolated as two stacked arrays, so the
    work is a handful of numpy calls on output-sized arrays. Every element goes
    through exactly the float64 operations of the plain formula
    ``top = tl + (tr - tl) * wx; bottom = bl + (br - bl) * wx;
    out = top + (bottom - top) * wy`` (only operands of ``+`` and ``*`` are
    swapped, which IEEE arithmetic does not notice), so results are bit-identical.
    ``image`` may be a strided view (a frame's channels): it is then gathered with
    fancy indexing instead of being copied whole first, or, when it is the first
    channels of a contiguous array of wider pixels (a decoded image, see
    ``pixels.rgb_view``), gathered whole from that array.

    Raises:
        ImageError: ``image`` is not HxWxC or the size is not positive.
    """
    src = _check_resize_args(image, height, width)
    in_h, in_w, channels = src.shape
    tables = _bilinear_tables(in_h, in_w, int(height), int(width))
    parent = None if src.flags.c_contiguous else _pixel_parent(src)
    if src.flags.c_contiguous:
        corners = src.reshape(in_h * in_w, channels).take(tables.flat, axis=0)
    elif parent is not None:
        # the first channels of wider pixels (Pillow's RGBX): gather and blend whole pixels, contiguous
        # all the way, and drop the extra channels from the small result (strided copies are slow)
        corners = parent.reshape(in_h * in_w, parent.shape[2]).take(tables.flat, axis=0)
    else:
        corners = src[tables.rows, tables.cols]
    left, right = corners[0], corners[1]  # each [top|bottom] x H x W x C, uint8
    # tr - tl is a small integer: exact in int16, and exact again as float64; tl is widened to
    # float64 inside the add. Same values as widening all four corners first, in 40% of the memory.
    rows = np.subtract(right, left, dtype=np.int16).astype(np.float64)
    rows *= tables.wx
    rows += left  # [top, bottom]
    top, bottom = rows[0], rows[1]
    out = np.subtract(bottom, top)
    out *= tables.wy
    out += top
    np.clip(out, 0, 255, out=out)
    if parent is not None:
        out = out[..., :channels]
    return out.astype(np.uint8)


def _pixel_parent(view: np.ndarray) -> Optional[np.ndarray]:
    """The C-contiguous HxWxC' array whose first channels ``view`` is (a decoded RGBX image's RGB), else None."""
    parent = view.base
    if not isinstance(parent, np.ndarray) or parent.ndim != 3 or not parent.flags.c_contiguous:
        return None
    if parent.shape[:2] != view.shape[:2] or parent.shape[2] < view.shape[2] or parent.dtype != view.dtype:
        return None
    if parent.strides != view.strides or parent.ctypes.data != view.ctypes.data:
        return None
    return parent


def resize_nearest(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """TensorFlow-style nearest-neighbour resize (half-pixel centres).

    Raises:
        ImageError: ``image`` is not HxWxC or the size is not positive.
    """
    src = _check_resize_args(image, height, width)
    in_h, in_w = src.shape[:2]
    return np.ascontiguousarray(src[_nearest_axis(in_h, height)][:, _nearest_axis(in_w, width)])


@functools.lru_cache(maxsize=64)
def _nearest_axis(in_size: int, out_size: int) -> np.ndarray:
    """Nearest source index per output index along one axis (cached, read-only)."""
    scale = in_size / out_size
    idx = np.floor((np.arange(out_size, dtype=np.float64) + 0.5) * scale).astype(np.intp)
    idx = np.minimum(idx, in_size - 1)
    idx.setflags(write=False)
    return idx


def _check_resize_args(image: np.ndarray, height: int, width: int) -> np.ndarray:
    if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[0] == 0 or image.shape[1] == 0:
        shape = list(image.shape) if isinstance(image, np.ndarray) else type(image).__name__
        raise ImageError(f"resize needs a non-empty HxWxC array, got {shape}")
    if not is_int(height) or not is_int(width) or height <= 0 or width <= 0:
        raise ImageError(f"resize target must be positive integers, got {height}x{width}")
    return image


def resize(
    image: np.ndarray,
    height: int,
    width: int,
    method: str = "bilinear",
    fill: int = 0,
) -> Tuple[np.ndarray, ImageTransform]:
    """Resize ``image`` to ``height`` x ``width`` and say how, so detection boxes can be mapped back.

    ``bilinear`` and ``nearest`` stretch the image to the target; ``letterbox``
    keeps the aspect ratio (bilinear inside), places the image at the top-left
    corner and fills the rest with ``fill``.

    Raises:
        ImageError: unknown method, or a bad image or size.
    """
    src = _check_resize_args(image, height, width)
    in_h, in_w = src.shape[:2]
    if method == "bilinear":
        out = resize_bilinear(src, height, width)
    elif method == "nearest":
        out = resize_nearest(src, height, width)
    elif method == "letterbox":
        return letterbox(src, height, width, fill=fill)
    else:
        raise ImageError(f"unknown resize method {method!r}; expected one of {', '.join(RESIZE_METHODS)}")
    transform = ImageTransform(in_w, in_h, width, height, width / in_w, height / in_h)
    return out, transform


def letterbox(
    image: np.ndarray, height: int, width: int, fill: int = 0, center: bool = False
) -> Tuple[np.ndarray, ImageTransform]:
    """Aspect-preserving bilinear resize into ``height`` x ``width``, padded with ``fill``.

    The image goes to the top-left corner (as Coral's detection tools place it) or,
    with ``center``, the middle; the transform records scale and padding.

    Raises:
        ImageError: a bad image or size.
    """
    src = _check_resize_args(image, height, width)
    if not is_int(fill) or not 0 <= fill <= 255:
        raise ImageError(f"letterbox fill must be an integer 0..255, got {fill!r}")
    in_h, in_w = src.shape[:2]
    scale = min(width / in_w, height / in_h)
    new_w = min(width, max(1, int(round(in_w * scale))))
    new_h = min(height, max(1, int(round(in_h * scale))))
    pad_x = (width - new_w) // 2 if center else 0
    pad_y = (height - new_h) // 2 if center else 0
    out = np.full((height, width, src.shape[2]), fill, dtype=np.uint8)
    out[pad_y : pad_y + new_h, pad_x : pad_x + new_w] = resize_bilinear(src, new_h, new_w)
    transform = ImageTransform(in_w, in_h, width, height, new_w / in_w, new_h / in_h, pad_x, pad_y)
    return out, transform
