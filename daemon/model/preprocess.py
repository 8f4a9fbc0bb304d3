"""Turn what callers send (files, encoded bytes, raw frames, arrays) into model input tensors.

Why this is hand-written rather than Pillow's ``resize``: a model's accuracy
depends on being fed the way it was evaluated. Coral's models were evaluated with
TensorFlow's bilinear resize (half-pixel centres, no antialiasing, truncated to
uint8); Pillow's BILINEAR antialiases when shrinking and costs mobilenet_v1_0.25
most of its score. So decoding uses Pillow, and resizing is done here in numpy.

Every bad input raises ``ImageError`` (never a raw Pillow or numpy exception).
"""
from __future__ import annotations

import functools
import io
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence, Tuple, Union

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from edgetpud.daemon.errors import ImageError
from edgetpud.hal.executor import TensorSpec

from .pixels import rgb_view

log = logging.getLogger(__name__)

ImageSource = Union[bytes, bytearray, memoryview, str, Path]

#: Encoded formats accepted by ``decode_image``; others are refused rather than guessed at.
ALLOWED_FORMATS: Tuple[str, ...] = ("JPEG", "PNG", "BMP")
#: Largest encoded image accepted, in bytes.
MAX_ENCODED_BYTES = 64 * 1024 * 1024
#: Largest decoded image accepted, in pixels (a decompression bomb guard, stricter than Pillow's).
MAX_PIXELS = 40_000_000
#: Resize methods a bundle may ask for.
RESIZE_METHODS: Tuple[str, ...] = ("bilinear", "nearest", "letterbox")

_FRAME_CHANNELS = {"RGB": 3, "BGR": 3, "RGBA": 4, "BGRA": 4, "GRAY": 1}


# --------------------------------------------------------------------------- decoding


def decode_image(
    source: ImageSource,
    max_pixels: int = MAX_PIXELS,
    max_bytes: int = MAX_ENCODED_BYTES,
    view: bool = False,
) -> np.ndarray:
    """Decode a JPEG, PNG or BMP (bytes or a file path) into an HxWx3 uint8 RGB array.

    EXIF orientation is applied so the array is upright as a viewer shows it.
    Grayscale and palette images are expanded to RGB, alpha is dropped (as
    ``tf.io.decode_image(channels=3)`` does) and 16-bit samples are scaled to 8 bits.
    With ``view`` the array may be a read-only strided view of the decoder's own
    memory (see ``pixels.rgb_view``): what preprocessing wants, since it reads only
    the pixels the resize needs; without, it is C-contiguous.

    Raises:
        ImageError: the file is unreadable, empty, not an accepted format, truncated,
            or larger than ``max_bytes`` / ``max_pixels``.
    """
    data = _read_source(source, max_bytes)
    what = f"image {Path(source).name}" if isinstance(source, (str, Path)) else "the image"
    if not data:
        raise ImageError(f"{what} is empty (0 bytes)")
    try:
        with Image.open(_open_file(data), formats=list(ALLOWED_FORMATS)) as img:
            width, height = img.size
            if width <= 0 or height <= 0:
                raise ImageError(f"{what} has no pixels ({width}x{height})")
            if width * height > max_pixels:
                raise ImageError(
                    f"{what} is {width}x{height} = {width * height} pixels, more than the limit of {max_pixels}"
                )
            img.load()
            return _to_rgb_array(_upright(img, what), view=view)
    except ImageError:
        raise
    except UnidentifiedImageError as exc:
        raise ImageError(
            f"{what} is not a {', '.join(ALLOWED_FORMATS[:-1])} or {ALLOWED_FORMATS[-1]} image"
        ) from exc
    except Image.DecompressionBombError as exc:
        raise ImageError(f"{what} is too large to decode safely: {exc}") from exc
    except (OSError, SyntaxError, ValueError, EOFError, IndexError, KeyError, TypeError) as exc:
        # Pillow reports truncated or corrupt data through all of these.
        raise ImageError(f"{what} is corrupt or truncated: {exc}") from exc


def _upright(img: Image.Image, what: str) -> Image.Image:
    """Apply the EXIF orientation; a damaged EXIF block costs the rotation, not the image.

    In place: the image is ours, and most photos need no rotation, where the
    default would still copy every pixel.
    """
    try:
        upright = ImageOps.exif_transpose(img, in_place=True)
    except Exception as exc:  # noqa: BLE001 - Pillow's EXIF parser raises struct/key/value/type errors
        log.warning("%s: ignoring unreadable EXIF orientation (%s)", what, exc)
        return img
    return upright if upright is not None else img


class _ViewFile:
    """A read-only file over a read-only memoryview, so that Pillow reads an image in place.

    ``io.BytesIO`` shares a ``bytes`` object but copies any other buffer whole; the
    daemon hands over a view into the request it received (see ``api.lift``).
    """

    def __init__(self, view: memoryview) -> None:
        self._view = view
        self._pos = 0

    def read(self, size: Optional[int] = -1) -> bytes:
        end = len(self._view) if size is None or size < 0 else min(len(self._view), self._pos + size)
        chunk = self._view[self._pos:end].tobytes()
        self._pos = max(self._pos, end)
        return chunk

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: len(self._view)}[whence]
        if base + offset < 0:
            raise ValueError(f"negative seek position {base + offset}")
        self._pos = base + offset
        return self._pos

    def tell(self) -> int:
        return self._pos


def _open_file(data: Union[bytes, memoryview]) -> Any:
    return _ViewFile(data) if isinstance(data, memoryview) else io.BytesIO(data)


def _read_source(source: ImageSource, max_bytes: int) -> Union[bytes, memoryview]:
    if isinstance(source, memoryview) and source.readonly and source.contiguous:
        data: Union[bytes, memoryview] = source.cast("B") if source.format != "B" or source.ndim != 1 else source
    elif isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)  # a writable buffer could change under the decoder
    elif isinstance(source, (str, Path)):
        path = Path(source)
        try:
            size = path.stat().st_size
            if size > max_bytes:
                raise ImageError(f"image {path.name} is {size} bytes, more than the limit of {max_bytes}")
            data = path.read_bytes()
        except OSError as exc:
            raise ImageError(f"cannot read image file {path}: {exc.strerror or exc}") from exc
    else:
        raise ImageError(f"an image must be bytes or a file path, got {type(source).__name__}")
    if len(data) > max_bytes:
        raise ImageError(f"the image is {len(data)} bytes, more than the limit of {max_bytes}")
    return data


def _to_rgb_array(img: Image.Image, view: bool = False) -> np.ndarray:
    """Convert any decoded Pillow mode to HxWx3 uint8, scaling wide samples instead of clipping them.

    With ``view``, an RGB result is a zero-copy view of Pillow's memory where Pillow can export it.
    """
    mode = img.mode
    if mode in ("RGBA", "RGBa", "RGBX", "P", "PA", "L", "LA", "1", "CMYK", "YCbCr", "La", "LAB", "HSV"):
        img, mode = img.convert("RGB"), "RGB"
    if mode == "RGB":
        pixels = rgb_view(img) if view else None
        if pixels is not None:
            return pixels
        array = np.asarray(img, dtype=np.uint8)
    elif mode.startswith("I;16") or mode in ("I", "F"):
        wide = np.asarray(img).astype(np.float64)
        if mode == "F":
            gray = np.clip(np.rint(wide), 0, 255)
        else:  # 16-bit samples (PNG stores them as I;16 or, in older Pillow, I)
            gray = np.clip(np.rint(wide / 257.0), 0, 255)
        array = np.repeat(gray.astype(np.uint8)[:, :, None], 3, axis=2)
    else:
        raise ImageError(f"images in Pillow mode {mode!r} are not supported")
    return np.ascontiguousarray(array)


def load_image(image: Any, copy: bool = True) -> np.ndarray:
    """Accept a path, encoded bytes, a Pillow image or an HxWxC uint8 array; return HxWx3 uint8.

    With ``copy=False`` an array comes back as a view (maybe strided) instead of a
    contiguous copy: what preprocessing wants, since the resize reads views directly.

    Raises:
        ImageError: the input is none of those or cannot be decoded.
    """
    if isinstance(image, np.ndarray):
        return as_image_array(image) if copy else image_view(image)
    if isinstance(image, (bytes, bytearray, memoryview, str, Path)):
        return decode_image(image, view=not copy)
    if isinstance(image, Image.Image):
        try:
            return _to_rgb_array(image)
        except (OSError, ValueError) as exc:
            raise ImageError(f"cannot convert the Pillow image: {exc}") from exc
    raise ImageError(
        f"an image must be a file path, encoded bytes, a PIL image or a numpy array, got {type(image).__name__}"
    )


def as_image_array(array: Any) -> np.ndarray:
    """Validate a raw HxWxC uint8 array (C = 1, 3 or 4) and return it as HxWx3 uint8 RGB.

    A single channel is repeated, a fourth (alpha) channel is dropped.

    Raises:
        ImageError: not an ndarray, not uint8, not 3-D, an unsupported channel count, or empty.
    """
    return np.ascontiguousarray(image_view(array))


def image_view(array: Any) -> np.ndarray:
    """``as_image_array`` without the copy: an HxWx3 view (alpha sliced off, gray broadcast).

    Raises:
        ImageError: as ``as_image_array``.
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
    """Convert one raw camera frame (rows of ``stride`` bytes) to HxWx3 uint8 RGB.

    ``stride`` defaults to ``width * bytes_per_pixel``; padding at the end of each
    row is skipped. The buffer must hold exactly ``stride * height`` bytes.

    Raises:
        ImageError: unknown pixel format, bad dimensions, a stride shorter than a
            row, or a buffer of the wrong size.
    """
    return np.ascontiguousarray(frame_view(buffer, width, height, stride, pixel_format))


def frame_view(
    buffer: Any,
    width: int,
    height: int,
    stride: Optional[int] = None,
    pixel_format: str = "RGB",
) -> np.ndarray:
    """``frame_to_rgb`` without the copy: an HxWx3 uint8 RGB view on ``buffer`` (maybe strided, read-only).

    Preprocessing reads only the pixels the resize needs, so converting a whole
    BGRA or padded frame first (about 1 ms for 640x480) is wasted work.

    Raises:
        ImageError: as ``frame_to_rgb``.
    """
    fmt = str(pixel_format).upper()
    if fmt not in _FRAME_CHANNELS:
        raise ImageError(f"unknown pixel format {pixel_format!r}; expected one of {', '.join(_FRAME_CHANNELS)}")
    bpp = _FRAME_CHANNELS[fmt]
    if not _is_int(width) or not _is_int(height) or width <= 0 or height <= 0:
        raise ImageError(f"frame width and height must be positive integers, got {width}x{height}")
    row = int(width) * bpp
    stride = row if stride is None else stride
    if not _is_int(stride) or stride < row:
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
    """Return a copy of the ``w`` x ``h`` region whose top-left corner is (``x``, ``y``).

    Raises:
        ImageError: the region is empty or does not lie inside the image.
    """
    return np.ascontiguousarray(crop_view(image, x, y, w, h))


def crop_view(image: np.ndarray, x: int, y: int, w: int, h: int) -> np.ndarray:
    """``crop`` without the copy (the resize reads the view directly).

    Raises:
        ImageError: as ``crop``.
    """
    if not isinstance(image, np.ndarray) or image.ndim < 2:
        raise ImageError("crop needs an HxW[xC] numpy array")
    if not all(_is_int(v) for v in (x, y, w, h)):
        raise ImageError(f"crop coordinates must be integers, got {(x, y, w, h)}")
    height, width = image.shape[:2]
    if w <= 0 or h <= 0 or x < 0 or y < 0 or x + w > width or y + h > height:
        raise ImageError(f"crop region x={x} y={y} w={w} h={h} is empty or outside the {width}x{height} image")
    return image[y : y + h, x : x + w]


def _is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


# --------------------------------------------------------------------------- resizing


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
    if not _is_int(height) or not _is_int(width) or height <= 0 or width <= 0:
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
    if not _is_int(fill) or not 0 <= fill <= 255:
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


# --------------------------------------------------------------------------- quantization


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
