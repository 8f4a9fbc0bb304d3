"""Parse an image request without copying its pixels.

Why: protobuf's Python parser copies a ``bytes`` field into its own memory, and
every read of the field copies it again into a new ``bytes``. A 600 KB JPEG or a
900 KB raw frame crossed memory twice more in the daemon before the decoder saw
it. Here the request is read from the bytes gRPC delivered: the one large field
(``image.encoded`` or ``image.frame.data``) is kept as a view into them, and the
message is parsed with that field left empty, which costs what a request without
an image costs.

Only the plain wire form is taken apart this way: the image field once, one
image source, no groups. Anything else (fields repeated to be merged, malformed
bytes) is parsed by protobuf as a whole, so the meaning of a request never
depends on which path read it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Generic, Iterator, Optional, Tuple, TypeVar

from edgetpud.daemon.wire import FRAME_DATA, IMAGE_ENCODED, IMAGE_FRAME, LENGTH_DELIMITED, encode_varint
from edgetpud.protos.edgetpud.v1 import edgetpud_pb2 as pb

M = TypeVar("M")


@dataclass(frozen=True)
class Lifted(Generic[M]):
    """A parsed request and, when it was lifted out, its image's pixel bytes.

    ``pixels`` is ``None`` when the message carries its own bytes (parsed whole); otherwise
    the message's ``image.encoded`` or ``image.frame.data`` is empty and ``pixels`` holds them.
    """

    message: M
    pixels: Optional[memoryview] = None


class _Unusual(Exception):
    """The wire form is not the plain one this module takes apart."""


def _varint(buf: bytes, pos: int, end: int) -> Tuple[int, int]:
    value = shift = 0
    while pos < end:
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7
        if shift > 63:
            break
    raise _Unusual("bad varint")


def _fields(buf: bytes, start: int, end: int) -> Iterator[Tuple[int, int, int, int, int]]:
    """(number, wire type, field start, value start, value end) of each field in ``buf[start:end]``."""
    pos = start
    while pos < end:
        field_start = pos
        key, pos = _varint(buf, pos, end)
        number, wire_type = key >> 3, key & 7
        if wire_type == 0:
            _, value_end = _varint(buf, pos, end)
        elif wire_type == 1:
            value_end = pos + 8
        elif wire_type == 2:
            length, pos = _varint(buf, pos, end)
            value_end = pos + length
        elif wire_type == 5:
            value_end = pos + 4
        else:
            raise _Unusual("group or unknown wire type")
        if number == 0 or value_end > end:
            raise _Unusual("truncated or invalid field")
        yield number, wire_type, field_start, pos, value_end
        pos = value_end


def _single(buf: bytes, start: int, end: int, wanted: Tuple[int, ...]) -> Optional[Tuple[int, int, int, int]]:
    """(number, field start, value start, value end) of the one field numbered in ``wanted``.

    None when none is there. Raises _Unusual when there are several (protobuf would merge
    them or let the last win) or one is not length-delimited.
    """
    found = None
    for number, wire_type, field_start, value_start, value_end in _fields(buf, start, end):
        if number in wanted:
            if found is not None or wire_type != LENGTH_DELIMITED:
                raise _Unusual("repeated or mistyped field")
            found = (number, field_start, value_start, value_end)
    return found


def _with_field_emptied(buf: bytes, start: int, end: int, field_start: int, value_start: int,
                        value_end: int, new_value: bytes) -> bytes:
    """``buf[start:end]`` with one length-delimited field's value replaced by ``new_value``."""
    key_end = _varint(buf, field_start, end)[1]
    return b"".join((buf[start:field_start], buf[field_start:key_end], encode_varint(len(new_value)),
                     new_value, buf[value_end:end]))


def _lift_image(buf: bytes, start: int, end: int) -> Optional[Tuple[bytes, memoryview]]:
    """An ``Image`` message's bytes with its pixels emptied, and a view of those pixels."""
    source = _single(buf, start, end, (IMAGE_ENCODED, IMAGE_FRAME))
    if source is None:
        return None
    number, field_start, value_start, value_end = source
    if number == IMAGE_ENCODED:
        pixels = memoryview(buf)[value_start:value_end]
        return _with_field_emptied(buf, start, end, field_start, value_start, value_end, b""), pixels
    data = _single(buf, value_start, value_end, (FRAME_DATA,))
    if data is None:
        return None
    _, data_start, data_value_start, data_end = data
    frame = _with_field_emptied(buf, value_start, value_end, data_start, data_value_start, data_end, b"")
    pixels = memoryview(buf)[data_value_start:data_end]
    return _with_field_emptied(buf, start, end, field_start, value_start, value_end, frame), pixels


def _lift_nested(buf: bytes, start: int, end: int, path: Tuple[int, ...]) -> Optional[Tuple[bytes, memoryview]]:
    """Follow ``path`` (field numbers of single message fields) down to an ``Image`` and lift it."""
    if not path:
        return _lift_image(buf, start, end)
    found = _single(buf, start, end, (path[0],))
    if found is None:
        return None
    _, field_start, value_start, value_end = found
    inner = _lift_nested(buf, value_start, value_end, path[1:])
    if inner is None:
        return None
    rewritten, pixels = inner
    return _with_field_emptied(buf, start, end, field_start, value_start, value_end, rewritten), pixels


def lifting_parser(message_type: Any, image_path: Tuple[int, ...]) -> Callable[[bytes], Lifted]:
    """A gRPC request deserializer that lifts the image found at ``image_path`` (field numbers).

    Raises (from the returned parser): google.protobuf.message.DecodeError for bytes protobuf
    cannot parse either, as the stock deserializer does.
    """
    parse = message_type.FromString

    def parser(data: bytes) -> Lifted:
        try:
            lifted = _lift_nested(data, 0, len(data), image_path)
        except _Unusual:
            lifted = None
        if lifted is None:
            return Lifted(parse(data))
        rewritten, pixels = lifted
        return Lifted(parse(rewritten), pixels)

    return parser


def image_field_path(message_type: Any, *names: str) -> Tuple[int, ...]:
    """Field numbers of ``names`` followed from ``message_type`` (so they follow the .proto file)."""
    numbers = []
    descriptor = message_type.DESCRIPTOR
    for name in names:
        field = descriptor.fields_by_name[name]
        numbers.append(field.number)
        descriptor = field.message_type
    assert descriptor is pb.Image.DESCRIPTOR, f"{'.'.join(names)} is not an Image"
    return tuple(numbers)


def unwrap(request: Any) -> Tuple[Any, Optional[memoryview]]:
    """(message, lifted pixels or None) from what a handler got: a Lifted or a plain message."""
    if isinstance(request, Lifted):
        return request.message, request.pixels
    return request, None
