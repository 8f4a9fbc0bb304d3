"""Image decoding, raw frames, resizing (hand-computed values) and input quantization."""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from edgetpud.daemon.errors import ImageError
from edgetpud.daemon.model.preprocess import (
    ImageTransform,
    as_image_array,
    crop,
    decode_image,
    frame_to_rgb,
    input_size,
    letterbox,
    load_image,
    quantize_input,
    resize,
    resize_bilinear,
    resize_nearest,
    to_channels,
)
from edgetpud.hal.executor import TensorSpec


def encode(img: Image.Image, fmt: str, **kwargs) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kwargs)
    return buf.getvalue()


def spec(shape, dtype=np.uint8, scale=0.0, zero_point=0) -> TensorSpec:
    return TensorSpec("input", 0, tuple(shape), np.dtype(dtype), scale, zero_point)


# ----------------------------------------------------------------------------- decode


def test_decode_png_is_lossless_rgb():
    pixels = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    out = decode_image(encode(Image.fromarray(pixels), "PNG"))
    assert out.dtype == np.uint8 and out.shape == (5, 7, 3)
    np.testing.assert_array_equal(out, pixels)


def test_decode_bmp_from_path(tmp_path: Path):
    pixels = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)
    path = tmp_path / "x.bmp"
    Image.fromarray(pixels).save(path)
    np.testing.assert_array_equal(decode_image(path), pixels)
    np.testing.assert_array_equal(decode_image(str(path)), pixels)


def test_grayscale_is_expanded_to_three_equal_channels():
    gray = np.array([[0, 50], [100, 255]], dtype=np.uint8)
    out = decode_image(encode(Image.fromarray(gray).convert("L"), "PNG"))
    assert out.shape == (2, 2, 3)
    for c in range(3):
        np.testing.assert_array_equal(out[:, :, c], gray)


def test_rgba_drops_alpha():
    rgba = np.zeros((2, 2, 4), dtype=np.uint8)
    rgba[..., 0], rgba[..., 1], rgba[..., 2], rgba[..., 3] = 10, 20, 30, 0
    out = decode_image(encode(Image.fromarray(rgba).convert("RGBA"), "PNG"))
    assert out.shape == (2, 2, 3)
    assert out[0, 0].tolist() == [10, 20, 30]


def test_palette_image_is_converted():
    img = Image.new("P", (3, 2))
    img.putpalette([0, 0, 0, 200, 100, 50] + [0] * (256 * 3 - 6))
    img.putpixel((1, 1), 1)
    out = decode_image(encode(img, "PNG"))
    assert out[1, 1].tolist() == [200, 100, 50]
    assert out[0, 0].tolist() == [0, 0, 0]


def test_16bit_png_is_scaled_not_clipped():
    wide = np.array([[0, 257 * 100, 32896, 65535]], dtype=np.uint16)
    data = encode(Image.fromarray(wide), "PNG")
    assert Image.open(io.BytesIO(data)).mode.startswith("I")
    out = decode_image(data)
    assert out.shape == (1, 4, 3)
    assert out[0, :, 0].tolist() == [0, 100, 128, 255]


def test_one_pixel_image():
    out = decode_image(encode(Image.new("RGB", (1, 1), (1, 2, 3)), "PNG"))
    assert out.shape == (1, 1, 3) and out[0, 0].tolist() == [1, 2, 3]


def test_exif_orientation_is_applied():
    # 32 wide x 16 tall: left half red, right half blue; orientation 6 = rotate 90 degrees clockwise to view.
    img = Image.new("RGB", (32, 16), (0, 0, 255))
    img.paste((255, 0, 0), (0, 0, 16, 16))
    exif = Image.Exif()
    exif[0x0112] = 6
    out = decode_image(encode(img, "JPEG", exif=exif, quality=95))
    assert out.shape == (32, 16, 3)  # now 16 wide x 32 tall
    top, bottom = out[4, 8].astype(int), out[28, 8].astype(int)
    assert top[0] > 200 and top[2] < 60  # red on top
    assert bottom[2] > 200 and bottom[0] < 60  # blue below


@pytest.mark.parametrize(
    "data, message",
    [
        (b"", "empty"),
        (b"this is not an image at all", "not a"),
        (bytes(np.random.default_rng(1).integers(0, 256, 4096, dtype=np.uint8)), "not a"),
    ],
)
def test_undecodable_bytes_raise_image_error(data, message):
    with pytest.raises(ImageError, match=message):
        decode_image(data)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "BMP"])
def test_a_read_only_view_decodes_like_the_bytes_it_views(fmt):
    """The daemon decodes straight from a view into the request it received (no copy first)."""
    rng = np.random.default_rng(3)
    data = encode(Image.fromarray(rng.integers(0, 256, (37, 61, 3), dtype=np.uint8)), fmt)
    framed = b"header" + data + b"trailer"
    view = memoryview(framed)[6:6 + len(data)]
    np.testing.assert_array_equal(decode_image(view), decode_image(data))
    with pytest.raises(ImageError, match="corrupt or truncated|not a"):
        decode_image(view[: len(data) // 2])
    with pytest.raises(ImageError, match="bytes, more than the limit"):
        decode_image(view, max_bytes=len(data) - 1)


def test_truncated_jpeg_raises_image_error():
    data = encode(Image.new("RGB", (64, 64), (9, 9, 9)), "JPEG")
    with pytest.raises(ImageError, match="corrupt or truncated"):
        decode_image(data[: len(data) // 2])


def test_empty_and_missing_and_text_files(tmp_path: Path):
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    text = tmp_path / "notes.png"
    text.write_text("hello")
    with pytest.raises(ImageError, match="empty"):
        decode_image(empty)
    with pytest.raises(ImageError, match="not a"):
        decode_image(text)
    with pytest.raises(ImageError, match="cannot read"):
        decode_image(tmp_path / "missing.png")
    with pytest.raises(ImageError, match="cannot read"):
        decode_image(tmp_path)


def test_format_outside_the_allowed_list_is_refused():
    with pytest.raises(ImageError, match="not a"):
        decode_image(encode(Image.new("RGB", (4, 4)), "GIF"))


def test_size_limits():
    data = encode(Image.new("RGB", (100, 100)), "PNG")
    with pytest.raises(ImageError, match="limit of 9999"):
        decode_image(data, max_pixels=9999)
    with pytest.raises(ImageError, match="bytes, more than the limit"):
        decode_image(data, max_bytes=10)


def test_load_image_dispatches_and_refuses_other_types():
    pixels = np.full((2, 2, 3), 7, dtype=np.uint8)
    np.testing.assert_array_equal(load_image(pixels), pixels)
    np.testing.assert_array_equal(load_image(Image.fromarray(pixels)), pixels)
    with pytest.raises(ImageError, match="must be a file path"):
        load_image(12345)


# ----------------------------------------------------------------------------- raw arrays and frames


def test_as_image_array_channels():
    gray = np.arange(4, dtype=np.uint8).reshape(2, 2, 1)
    assert as_image_array(gray)[:, :, 2].tolist() == [[0, 1], [2, 3]]
    rgba = np.arange(16, dtype=np.uint8).reshape(2, 2, 4)
    np.testing.assert_array_equal(as_image_array(rgba), rgba[:, :, :3])


@pytest.mark.parametrize(
    "array",
    [
        np.zeros((4, 4, 3), dtype=np.float32),
        np.zeros((4, 4, 3), dtype=np.uint16),
        np.zeros((4, 4), dtype=np.uint8),
        np.zeros((4, 4, 2), dtype=np.uint8),
        np.zeros((1, 4, 4, 3), dtype=np.uint8),
        np.zeros((0, 4, 3), dtype=np.uint8),
        [[1, 2, 3]],
    ],
)
def test_as_image_array_rejects_wrong_shape_or_dtype(array):
    with pytest.raises(ImageError):
        as_image_array(array)


def test_frame_rgb_with_row_padding():
    width, height, stride = 2, 2, 8  # 6 bytes of pixels + 2 of padding per row
    rows = [bytes([1, 2, 3, 4, 5, 6, 0xEE, 0xEE]), bytes([7, 8, 9, 10, 11, 12, 0xEE, 0xEE])]
    out = frame_to_rgb(b"".join(rows), width, height, stride, "RGB")
    assert out.tolist() == [[[1, 2, 3], [4, 5, 6]], [[7, 8, 9], [10, 11, 12]]]


def test_frame_formats():
    assert frame_to_rgb(bytes([1, 2, 3]), 1, 1, pixel_format="BGR").tolist() == [[[3, 2, 1]]]
    assert frame_to_rgb(bytes([1, 2, 3, 9]), 1, 1, pixel_format="RGBA").tolist() == [[[1, 2, 3]]]
    assert frame_to_rgb(bytes([1, 2, 3, 9]), 1, 1, pixel_format="BGRA").tolist() == [[[3, 2, 1]]]
    assert frame_to_rgb(bytes([5, 6]), 2, 1, pixel_format="gray").tolist() == [[[5, 5, 5], [6, 6, 6]]]
    frame = np.arange(12, dtype=np.uint8)
    assert frame_to_rgb(frame, 2, 2, pixel_format="RGB").shape == (2, 2, 3)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(buffer=bytes(12), width=2, height=2, stride=5), "shorter than a row"),
        (dict(buffer=bytes(11), width=2, height=2), "needs 12"),
        (dict(buffer=bytes(20), width=2, height=2, stride=8), "needs 16"),
        (dict(buffer=bytes(12), width=2, height=2, pixel_format="YUYV"), "unknown pixel format"),
        (dict(buffer=bytes(12), width=0, height=2), "positive"),
        (dict(buffer=12, width=2, height=2), "bytes-like"),
    ],
)
def test_frame_errors(kwargs, message):
    with pytest.raises(ImageError, match=message):
        frame_to_rgb(**kwargs)


def test_crop():
    img = np.arange(4 * 5 * 3, dtype=np.uint8).reshape(4, 5, 3)
    out = crop(img, 1, 2, 3, 2)
    np.testing.assert_array_equal(out, img[2:4, 1:4])
    for bad in [(0, 0, 6, 1), (-1, 0, 1, 1), (0, 0, 0, 1), (4, 3, 2, 2), (0.5, 0, 1, 1)]:
        with pytest.raises(ImageError):
            crop(img, *bad)


# ----------------------------------------------------------------------------- resizing


def row(values) -> np.ndarray:
    return np.array(values, dtype=np.uint8).reshape(1, -1, 1)


def test_bilinear_upscale_uses_half_pixel_centres():
    # src x = (i + 0.5) * 0.5 - 0.5 = -0.25, 0.25, 0.75, 1.25 -> clamped edges, lerps 0.25 and 0.75
    assert resize_bilinear(row([0, 100]), 1, 4).ravel().tolist() == [0, 25, 75, 100]


def test_bilinear_downscale_does_not_antialias():
    # src x = (i + 0.5) * 2 - 0.5 = 0.5, 2.5: the mean of pixels (0, 1) and (2, 3), pixels beyond ignored
    assert resize_bilinear(row([0, 10, 20, 30]), 1, 2).ravel().tolist() == [5, 25]
    # Scale 3: src x = 1, 4 exactly, so pixels 1 and 4 and nothing else.
    assert resize_bilinear(row([0, 90, 0, 0, 60, 0]), 1, 2).ravel().tolist() == [90, 60]


def test_bilinear_truncates_rather_than_rounds():
    assert resize_bilinear(row([0, 1]), 1, 4).ravel().tolist() == [0, 0, 0, 1]


def test_bilinear_2d_and_identity():
    img = np.array([[0, 100], [100, 200]], dtype=np.uint8).reshape(2, 2, 1)
    assert resize_bilinear(img, 1, 1).item() == 100
    pixels = np.random.default_rng(2).integers(0, 256, (6, 5, 3), dtype=np.uint8)
    np.testing.assert_array_equal(resize_bilinear(pixels, 6, 5), pixels)


def test_nearest_half_pixel():
    assert resize_nearest(row([0, 10, 20, 30]), 1, 2).ravel().tolist() == [10, 30]
    assert resize_nearest(row([0, 10]), 1, 4).ravel().tolist() == [0, 0, 10, 10]


def test_resize_reports_stretch_transform():
    img = np.zeros((50, 100, 3), dtype=np.uint8)
    out, t = resize(img, 10, 10, "nearest")
    assert out.shape == (10, 10, 3)
    assert (t.scale_x, t.scale_y, t.pad_x, t.pad_y) == (0.1, 0.2, 0, 0)
    assert t.box_to_source(0.5, 0.25, 1.0, 0.75) == (25.0, 25.0, 75.0, 50.0)


def test_letterbox_top_left_and_centre():
    img = np.full((50, 100, 3), 200, dtype=np.uint8)
    out, t = letterbox(img, 20, 20, fill=7)
    assert out.shape == (20, 20, 3)
    assert out[:10].min() == 200 and out[10:].max() == 7
    assert (t.scale_x, t.scale_y, t.pad_x, t.pad_y) == (0.2, 0.2, 0, 0)
    # The image fills the top half of the input: y 0..0.5 maps to the whole source height.
    assert t.box_to_source(0.0, 0.0, 0.5, 1.0) == (0.0, 0.0, 100.0, 50.0)
    assert t.box_to_source(0.0, 0.0, 1.0, 1.0) == (0.0, 0.0, 100.0, 50.0)  # padding is clipped away
    out, t = letterbox(img, 20, 20, center=True)
    assert t.pad_y == 5 and out[5:15].min() == 200 and out[:5].max() == 0
    assert t.box_to_source(0.25, 0.5, 0.75, 1.0) == (50.0, 0.0, 100.0, 50.0)


def test_resize_via_dispatcher_letterbox_and_errors():
    img = np.zeros((10, 20, 3), dtype=np.uint8)
    out, t = resize(img, 8, 8, "letterbox")
    assert out.shape == (8, 8, 3) and t.scale_x == 0.4
    with pytest.raises(ImageError, match="unknown resize"):
        resize(img, 8, 8, "bicubic")
    with pytest.raises(ImageError, match="positive"):
        resize(img, 0, 8)


def test_transform_maps_crop_region_back():
    t = ImageTransform(200, 100, 10, 10, 0.5, 0.5, region_x=50, region_y=20, region_width=20, region_height=20)
    assert t.box_to_source(0.0, 0.0, 1.0, 1.0) == (50.0, 20.0, 70.0, 40.0)


# ----------------------------------------------------------------------------- quantization


def test_uint8_input_is_fed_unchanged_by_default():
    pixels = np.array([[[0, 128, 255]]], dtype=np.uint8)
    out = quantize_input(pixels, spec([1, 1, 1, 3], np.uint8, 1 / 128, 128))
    assert out.shape == (1, 1, 1, 3) and out.dtype == np.uint8
    assert out.ravel().tolist() == [0, 128, 255]
    # mean/std equal to the quantization is the same thing
    same = quantize_input(pixels, spec([1, 1, 1, 3], np.uint8, 1 / 128, 128), mean=128, std=128)
    assert same.ravel().tolist() == [0, 128, 255]


def test_uint8_input_with_normalisation():
    pixels = np.array([[[0, 64, 255]]], dtype=np.uint8)
    # real = (p - 127.5) / 127.5; q = round(real * 128 + 128), saturated
    out = quantize_input(pixels, spec([1, 1, 1, 3], np.uint8, 1 / 128, 128), mean=127.5, std=127.5)
    assert out.ravel().tolist() == [0, 64, 255]
    out = quantize_input(pixels, spec([1, 1, 1, 3], np.uint8, 1 / 255, 0), mean=0, std=255)
    assert out.ravel().tolist() == [0, 64, 255]
    out = quantize_input(pixels, spec([1, 1, 1, 3], np.uint8, 1 / 64, 0), mean=0, std=255)
    assert out.ravel().tolist() == [0, 16, 64]


def test_int8_input():
    pixels = np.array([[[0, 128, 255]]], dtype=np.uint8)
    out = quantize_input(pixels, spec([1, 1, 1, 3], np.int8, 1 / 128, 0))
    assert out.dtype == np.int8 and out.ravel().tolist() == [-128, 0, 127]
    out = quantize_input(pixels, spec([1, 1, 1, 3], np.int8, 1 / 255, -128), mean=0, std=255)
    assert out.ravel().tolist() == [-128, 0, 127]


def test_float_input_per_channel():
    pixels = np.array([[[0, 100, 255]]], dtype=np.uint8)
    out = quantize_input(pixels, spec([1, 1, 1, 3], np.float32), mean=[0, 100, 127.5], std=[1, 50, 127.5])
    assert out.dtype == np.float32
    np.testing.assert_allclose(out.ravel(), [0.0, 0.0, 1.0])
    raw = quantize_input(pixels.astype(np.float32), spec([1, 1, 1, 3], np.float32))
    np.testing.assert_allclose(raw.ravel(), [0, 100, 255])


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(pixels=np.zeros((2, 2, 3), np.uint8)), "needs \\[1, 1, 1, 3\\]"),
        (dict(pixels=np.zeros((1, 1, 3), np.uint8), std=0), "zero"),
        (dict(pixels=np.zeros((1, 1, 3), np.uint8), mean=[1, 2]), "2 values"),
        (dict(pixels=np.zeros((1, 1, 3), np.uint8), mean="x"), "mean"),
        (dict(pixels="not an array"), "numeric"),
    ],
)
def test_quantize_errors(kwargs, message):
    with pytest.raises(ImageError, match=message):
        quantize_input(spec=spec([1, 1, 1, 3], np.uint8, 1 / 128, 128), **kwargs)


def test_input_size_and_channels():
    assert input_size(spec([1, 224, 160, 3])) == (224, 160)
    with pytest.raises(ImageError, match="not an image input"):
        input_size(spec([1, 1001]))
    gray = to_channels(np.array([[[255, 255, 255], [255, 0, 0]]], dtype=np.uint8), 1)
    assert gray.shape == (1, 2, 1) and gray.ravel().tolist() == [255, 76]
