"""The client's one-copy request encoder gives exactly the message protobuf itself would build.

``encode_image_request`` writes an image request's wire bytes by hand so that a large
frame is copied once; any drift from protobuf's own encoding would corrupt every
camera app's requests, so each kind of image is checked against ``fill_image``.
"""
from __future__ import annotations

import numpy as np
import pytest

from edgetpud.daemon.client._convert import encode_image_request, fill_image
from edgetpud.daemon.client.types import Frame
from edgetpud.protos.edgetpud.v1 import edgetpud_pb2 as pb

RNG = np.random.default_rng(7)
PIXELS = RNG.integers(0, 256, size=(5, 7, 4), dtype=np.uint8)


def padded_frame() -> Frame:
    rows = np.zeros((5, 7 * 3 + 3), np.uint8)  # 3 bytes of padding after each row
    rows[:, :21] = PIXELS[:, :, :3].reshape(5, 21)
    return Frame(data=rows.tobytes(), width=7, height=5, stride=24, pixel_format="bgr")


IMAGES = {
    "encoded bytes": b"\xff\xd8 not really a jpeg, the daemon decodes it" * 50,
    "bytearray": bytearray(b"\x89PNG" * 40),
    "empty bytes": b"",
    "frame": Frame(data=PIXELS[:, :, :3].tobytes(), width=7, height=5, pixel_format="RGB"),
    "padded frame": padded_frame(),
    "frame from a memoryview": Frame(data=memoryview(PIXELS.tobytes()), width=7, height=5, pixel_format="RGBA"),
    "gray array": PIXELS[:, :, 0].copy(),
    "rgb array": PIXELS[:, :, :3].copy(),
    "rgba array": PIXELS,
    "non-contiguous array": PIXELS[:, ::2, :3],
    "large frame": Frame(data=bytes(1920 * 1080 * 3), width=1920, height=1080, pixel_format="RGB"),
}


@pytest.mark.parametrize("kind", sorted(IMAGES))
@pytest.mark.parametrize("crop", [None, (1, 2, 3, 2)])
def test_hand_encoded_request_parses_to_the_protobuf_built_one(kind, crop):
    request = pb.ClassifyRequest(model="m", version="3", top_k=5, threshold=0.25)
    expected = pb.ClassifyRequest()
    expected.CopyFrom(request)
    fill_image(expected.image, IMAGES[kind], crop)

    parsed = pb.ClassifyRequest.FromString(encode_image_request(request, IMAGES[kind], crop))

    assert parsed == expected
    assert not request.HasField("image"), "the caller's request is left as it was"


def test_a_path_is_read_and_sent_encoded(tmp_path):
    path = tmp_path / "photo.jpg"
    path.write_bytes(b"jpeg bytes")
    parsed = pb.DetectRequest.FromString(encode_image_request(pb.DetectRequest(model="d"), path))
    assert parsed.image.encoded == b"jpeg bytes" and parsed.model == "d"


@pytest.mark.parametrize("bad, message", [
    (np.zeros((4, 4, 2), np.uint8), "uint8 HxW, HxWx3"),
    (np.zeros((4, 4, 3), np.float32), "uint8 HxW, HxWx3"),
    (Frame(data=b"", width=1, height=1, pixel_format="YUYV"), "unknown pixel format"),
    (12345, "cannot send int as an image"),
])
def test_bad_images_are_refused_the_same_way_by_both_paths(bad, message):
    with pytest.raises(ValueError, match=message):
        encode_image_request(pb.ClassifyRequest(model="m"), bad)
    with pytest.raises(ValueError, match=message):
        fill_image(pb.Image(), bad)
