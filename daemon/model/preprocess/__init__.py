"""Turn what callers send (files, encoded bytes, raw frames, arrays) into model input tensors.

``decode`` reads encoded images, ``frames`` views raw arrays and camera frames (and
crops them), ``resize`` resizes as TensorFlow does, ``quantize`` fits the pixels to
an input tensor.

One convention for memory: every function returns a view where it can (maybe
strided, maybe read-only), and only the resize makes a new array. Preprocessing
reads just the pixels the resize needs, so copying a whole frame first is wasted
work; a caller that keeps or writes the pixels copies them (``np.ascontiguousarray``).

Every bad input raises ``ImageError`` (never a raw Pillow or numpy exception).
"""
from __future__ import annotations

from .decode import ALLOWED_FORMATS, MAX_ENCODED_BYTES, MAX_PIXELS, ImageSource, decode_image, load_image
from .frames import as_image_array, crop, frame_to_rgb
from .quantize import input_size, quantize, quantize_input, to_channels
from .resize import RESIZE_METHODS, ImageTransform, letterbox, resize, resize_bilinear, resize_nearest

__all__ = [
    "ALLOWED_FORMATS", "MAX_ENCODED_BYTES", "MAX_PIXELS", "RESIZE_METHODS", "ImageSource", "ImageTransform",
    "as_image_array", "crop", "decode_image", "frame_to_rgb", "input_size", "letterbox", "load_image",
    "quantize", "quantize_input", "resize", "resize_bilinear", "resize_nearest", "to_channels",
]
