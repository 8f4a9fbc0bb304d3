"""Decoded images read without copying (pixels.rgb_view), and preprocessing that gives the same tensors from them."""
from __future__ import annotations

import gc
import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from edgetpud.daemon.model import load_model
from edgetpud.daemon.model.pixels import rgb_view
from edgetpud.daemon.model.preprocess import crop, decode_image, letterbox, resize, resize_bilinear

needs_arrow = pytest.mark.skipif(not hasattr(Image.Image, "__arrow_c_array__"),
                                 reason="this Pillow has no Arrow export (11.2 and later have it)")


def jpeg(width: int = 61, height: int = 37, seed: int = 0) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def decoded(data: bytes) -> Image.Image:
    img = Image.open(io.BytesIO(data))
    img.load()
    return img


@needs_arrow
def test_rgb_view_is_the_decoded_pixels_in_pillows_own_memory():
    img = decoded(jpeg())
    view = rgb_view(img)
    assert view is not None
    np.testing.assert_array_equal(view, np.asarray(img))
    assert view.shape == (37, 61, 3) and view.dtype == np.uint8
    assert view.strides == (61 * 4, 4, 1)  # Pillow's 4-byte pixels, not a packed copy
    assert not view.flags.writeable


@needs_arrow
def test_the_view_outlives_the_closed_image():
    data = jpeg(200, 150, seed=1)

    def decode() -> tuple:
        with Image.open(io.BytesIO(data)) as img:
            img.load()
            return rgb_view(img), np.asarray(img).copy()

    views = [decode() for _ in range(4)]
    gc.collect()
    churn = [np.full(200 * 150 * 4, 7, np.uint8) for _ in range(64)]  # reuse any memory that was freed
    for view, expected in views:
        np.testing.assert_array_equal(view, expected)
    del churn


def test_no_view_for_other_modes():
    assert rgb_view(Image.new("L", (4, 3))) is None
    assert rgb_view(Image.new("RGBA", (4, 3))) is None


@needs_arrow
def test_no_view_for_an_image_spread_over_memory_blocks_and_decoding_still_works():
    data = jpeg(100, 100, seed=2)
    expected = np.asarray(decoded(data))
    old = Image.core.get_block_size()
    Image.core.set_block_size(4096)  # 100 rows of 400 bytes no longer fit one block
    try:
        assert rgb_view(decoded(data)) is None
        out = decode_image(data)
    finally:
        Image.core.set_block_size(old)
    np.testing.assert_array_equal(out, expected)
    assert out.flags.c_contiguous


def test_decode_is_pillows_pixels_in_place_or_else_contiguous():
    data = jpeg()
    view = decode_image(data)
    np.testing.assert_array_equal(view, np.asarray(decoded(data)))
    if rgb_view(decoded(data)) is not None:  # this Pillow exports its memory: the decode copies nothing
        assert view.strides == (61 * 4, 4, 1) and not view.flags.writeable
    else:
        assert view.flags.c_contiguous


@pytest.mark.parametrize("size", [(16, 16), (128, 128), (50, 90), (224, 224)])
def test_resize_of_the_first_channels_of_wider_pixels_is_bit_identical(size):
    rgbx = np.random.default_rng(3).integers(0, 256, (97, 131, 4), dtype=np.uint8)
    view = rgbx[:, :, :3]
    contiguous = np.ascontiguousarray(view)
    out = resize_bilinear(view, *size)
    np.testing.assert_array_equal(out, resize_bilinear(contiguous, *size))
    assert out.flags.c_contiguous and out.shape == (*size, 3)
    # views that are not the leading channels of the whole array take the general path, same answer
    for other in (rgbx[:, :, 1:], crop(view, 5, 7, 60, 40), rgbx[::2, :, :3]):
        np.testing.assert_array_equal(resize_bilinear(other, *size), resize_bilinear(np.ascontiguousarray(other), *size))


def test_every_resize_method_reads_a_decoded_view_like_a_copy(test_data: Path):
    for path in sorted(test_data.glob("*.jpg")) + sorted(test_data.glob("*.bmp")):
        view = decode_image(path)
        copy = np.ascontiguousarray(view)  # the caller's copy
        np.testing.assert_array_equal(view, copy)
        for method in ("bilinear", "nearest"):
            np.testing.assert_array_equal(resize(view, 128, 128, method)[0], resize(copy, 128, 128, method)[0])
        np.testing.assert_array_equal(letterbox(view, 160, 160)[0], letterbox(copy, 160, 160)[0])


def test_preprocessing_encoded_bytes_gives_the_tensor_of_the_decoded_array(test_data: Path):
    """The public model API: bytes take the zero-copy path, an array the plain one; the tensors match bit for bit."""
    model = load_model(test_data / "mobilenet_v1_1.0_224_quant_embedding_extractor.tflite")
    small = load_model(test_data / "mobilenet_v1_0.25_128_quant.tflite")
    for name in ("parrot.jpg", "grace_hopper.bmp", "kite_and_cold.jpg"):
        data = (test_data / name).read_bytes()
        pixels = np.asarray(Image.open(io.BytesIO(data)).convert("RGB")).copy()
        for session in (model, small):
            from_bytes, _ = session.preprocess(data)
            from_array, _ = session.preprocess(pixels)
            np.testing.assert_array_equal(from_bytes[0], from_array[0])
