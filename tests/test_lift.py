"""Image requests parsed without copying their pixels (daemon/api/lift.py).

Whatever the wire bytes, the lifted parse must mean what protobuf's own parse
means; the plain form a client library writes must actually be lifted.
"""
from __future__ import annotations

import random
import struct
from typing import List, Optional, Tuple

import pytest
from google.protobuf.message import DecodeError

from edgetpud.daemon.api import lift
from edgetpud.daemon.api.inference import LIFTED_IMAGES
from edgetpud.protos.edgetpud.v1 import edgetpud_pb2 as pb


def _varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _int_field(number: int, value: int) -> bytes:
    return _varint(number << 3) + _varint(value)


def _restored(lifted: lift.Lifted, message_type, image_of) -> object:
    """The lifted message with its pixels put back, to compare with protobuf's own parse."""
    message = message_type()
    message.CopyFrom(lifted.message)
    if lifted.pixels is not None:
        image = image_of(message)
        if image.WhichOneof("source") == "encoded":
            image.encoded = bytes(lifted.pixels)
        else:
            image.frame.data = bytes(lifted.pixels)
    return message


def _image(rng: random.Random) -> Tuple[bytes, bool]:
    """Random Image wire bytes, and whether they are the plain form (one source, its bytes once)."""
    pixels = rng.randbytes(rng.choice([0, 1, 200, 5000]))
    pieces: List[bytes] = []
    plain = True
    if rng.random() < 0.5:
        pieces.append(_field(1, pixels))
    else:
        frame = [_field(1, pixels), _int_field(2, rng.randrange(1, 700)), _int_field(3, rng.randrange(1, 500))]
        if rng.random() < 0.3:
            frame.append(_int_field(5, rng.randrange(0, 6)))
        if rng.random() < 0.15:  # data twice: the last one wins
            frame.append(_field(1, rng.randbytes(7)))
            plain = False
        rng.shuffle(frame)
        pieces.append(_field(2, b"".join(frame)))
    if rng.random() < 0.4:
        pieces.append(_field(3, _int_field(1, 5) + _int_field(3, 9)))
    if rng.random() < 0.15:  # a second source: the oneof keeps the last
        pieces.append(_field(1 if rng.random() < 0.5 else 2, _field(1, b"other")))
        plain = False
    if rng.random() < 0.2:  # an unknown field is kept, whatever the path
        pieces.append(_int_field(77, 1))
    rng.shuffle(pieces)
    return b"".join(pieces), plain


def _classify_request(rng: random.Random) -> Tuple[bytes, Optional[bool]]:
    image, plain = _image(rng)
    pieces = [_field(1, b"mobilenet"), _field(3, image)]
    if rng.random() < 0.5:
        pieces.append(_int_field(4, rng.randrange(0, 10)))
    if rng.random() < 0.5:
        pieces.append(_varint(5 << 3 | 5) + struct.pack("<f", 0.25))
    if rng.random() < 0.3:
        pieces.append(_field(2, b"3"))
    if rng.random() < 0.1:  # the image twice: protobuf merges the two
        other, _ = _image(rng)
        pieces.append(_field(3, other))
        plain = False
    rng.shuffle(pieces)
    return b"".join(pieces), plain


def test_random_classify_requests_mean_what_protobuf_reads():
    rng = random.Random(20261121)
    parse = lift.lifting_parser(pb.ClassifyRequest, lift.image_field_path(pb.ClassifyRequest, "image"))
    lifted_count = 0
    for _ in range(600):
        data, plain = _classify_request(rng)
        lifted = parse(data)
        assert _restored(lifted, pb.ClassifyRequest, lambda m: m.image) == pb.ClassifyRequest.FromString(data)
        assert (lifted.pixels is not None) == plain, data
        lifted_count += lifted.pixels is not None
    assert lifted_count > 300  # the plain form is the common case here, as from every client


@pytest.mark.parametrize("image", [
    pb.Image(encoded=b"\xff\xd8jpeg-bytes"),
    pb.Image(encoded=b"jpeg", crop=pb.Crop(x=1, y=2, width=3, height=4)),
    pb.Image(frame=pb.RawFrame(data=bytes(range(256)) * 9, width=48, height=16, pixel_format=pb.PIXEL_FORMAT_BGR)),
])
def test_what_the_client_library_sends_is_lifted_for_every_image_method(image):
    requests = {
        "Classify": pb.ClassifyRequest(model="m", image=image, top_k=3),
        "Detect": pb.DetectRequest(model="m", version="2", image=image, threshold=0.5),
        "Embed": pb.EmbedRequest(model="m", image=image, normalize=True),
        "Invoke": pb.InvokeRequest(model="m", image=image),
        "Stream": pb.StreamRequest(frame=pb.StreamFrame(frame_id=7, image=image)),
    }
    assert set(requests) == set(LIFTED_IMAGES)
    expected_pixels = image.encoded or image.frame.data
    for method, request in requests.items():
        message_type = type(request)
        path = LIFTED_IMAGES[method]
        lifted = lift.lifting_parser(message_type, lift.image_field_path(message_type, *path))(
            request.SerializeToString())

        def image_of(message, path=path):
            for name in path:
                message = getattr(message, name)
            return message
        assert isinstance(lifted.pixels, memoryview) and bytes(lifted.pixels) == expected_pixels, method
        assert not image_of(lifted.message).encoded and not image_of(lifted.message).frame.data
        assert _restored(lifted, message_type, image_of) == request, method


def test_requests_without_an_image_are_parsed_whole():
    parse = lift.lifting_parser(pb.StreamRequest, lift.image_field_path(pb.StreamRequest, "frame", "image"))
    config = pb.StreamRequest(config=pb.StreamConfig(model="m", task=pb.TASK_DETECT))
    tensors = pb.StreamRequest(frame=pb.StreamFrame(inputs=[pb.Tensor(name="x", dtype="uint8", shape=[2], data=b"ab")]))
    for request in (config, tensors, pb.StreamRequest()):
        lifted = parse(request.SerializeToString())
        assert lifted.pixels is None and lifted.message == request


@pytest.mark.parametrize("cut", [1, 5, 12, -3, -1])
def test_malformed_bytes_fail_as_protobuf_fails(cut):
    data = pb.ClassifyRequest(model="m", image=pb.Image(encoded=b"x" * 300)).SerializeToString()[:cut]
    parse = lift.lifting_parser(pb.ClassifyRequest, lift.image_field_path(pb.ClassifyRequest, "image"))
    with pytest.raises(DecodeError):
        pb.ClassifyRequest.FromString(data)
    with pytest.raises(DecodeError):
        parse(data)


def test_image_field_path_refuses_a_field_that_is_not_an_image():
    with pytest.raises(AssertionError, match="not an Image"):
        lift.image_field_path(pb.StreamRequest, "frame")
