"""Encoded images (JPEG, PNG, BMP; bytes or a path) and Pillow images to HxWx3 uint8 RGB pixels.

Decoding uses Pillow, and returns its memory where it can (see ``pixels.rgb_view``):
preprocessing reads only the pixels the resize needs, so packing a copy first is
wasted work. A caller that keeps or writes the pixels copies them.
"""
from __future__ import annotations

import io
import logging
from pathlib import Path
from typing import Any, Optional, Tuple, Union

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from edgetpud.daemon.errors import ImageError

from ..pixels import rgb_view
from .frames import as_image_array

log = logging.getLogger(__name__)

ImageSource = Union[bytes, bytearray, memoryview, str, Path]

#: Encoded formats accepted by ``decode_image``; others are refused rather than guessed at.
ALLOWED_FORMATS: Tuple[str, ...] = ("JPEG", "PNG", "BMP")
#: Largest encoded image accepted, in bytes.
MAX_ENCODED_BYTES = 64 * 1024 * 1024
#: Largest decoded image accepted, in pixels (a decompression bomb guard, stricter than Pillow's).
MAX_PIXELS = 40_000_000


def decode_image(
    source: ImageSource,
    max_pixels: int = MAX_PIXELS,
    max_bytes: int = MAX_ENCODED_BYTES,
) -> np.ndarray:
    """Decode a JPEG, PNG or BMP (bytes or a file path) into an HxWx3 uint8 RGB array.

    EXIF orientation is applied so the array is upright as a viewer shows it.
    Grayscale and palette images are expanded to RGB, alpha is dropped (as
    ``tf.io.decode_image(channels=3)`` does) and 16-bit samples are scaled to 8 bits.
    The array may be a read-only strided view of the decoder's own memory.

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
            return _to_rgb_array(_upright(img, what))
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


def load_image(image: Any) -> np.ndarray:
    """Accept a path, encoded bytes, a Pillow image or an HxWxC uint8 array; return HxWx3 uint8 (maybe a view).

    Raises:
        ImageError: the input is none of those or cannot be decoded.
    """
    if isinstance(image, np.ndarray):
        return as_image_array(image)
    if isinstance(image, (bytes, bytearray, memoryview, str, Path)):
        return decode_image(image)
    if isinstance(image, Image.Image):
        try:
            return _to_rgb_array(image)
        except (OSError, ValueError) as exc:
            raise ImageError(f"cannot convert the Pillow image: {exc}") from exc
    raise ImageError(
        f"an image must be a file path, encoded bytes, a PIL image or a numpy array, got {type(image).__name__}"
    )


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


def _to_rgb_array(img: Image.Image) -> np.ndarray:
    """Convert any decoded Pillow mode to HxWx3 uint8, scaling wide samples instead of clipping them.

    An RGB result is a zero-copy view of Pillow's memory where Pillow can export it.
    """
    mode = img.mode
    if mode in ("RGBA", "RGBa", "RGBX", "P", "PA", "L", "LA", "1", "CMYK", "YCbCr", "La", "LAB", "HSV"):
        img, mode = img.convert("RGB"), "RGB"
    if mode == "RGB":
        pixels = rgb_view(img)
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
