"""Protobuf wire pieces that the server (``daemon/api``) and the client both write.

One definition of each, so the two ends cannot drift apart: the varint of the
wire format and the field numbers of an image's pixels (the server re-frames a
request it reads without copying; the client frames an image request without
copying its pixels), and a numpy array as a ``Tensor`` message.
"""
from __future__ import annotations

import numpy as np

from edgetpud.protos.edgetpud.v1 import edgetpud_pb2 as pb

#: Wire type of bytes, strings and embedded messages: a varint length, then the payload.
LENGTH_DELIMITED = 2
#: Field numbers of an image's pixels: the ``Image.source`` oneof's two members, and ``RawFrame.data``.
IMAGE_ENCODED = pb.Image.DESCRIPTOR.fields_by_name["encoded"].number
IMAGE_FRAME = pb.Image.DESCRIPTOR.fields_by_name["frame"].number
FRAME_DATA = pb.RawFrame.DESCRIPTOR.fields_by_name["data"].number


def encode_varint(value: int) -> bytes:
    """``value`` (>= 0) as a protobuf base-128 varint, low groups first."""
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def tensor(name: str, array: np.ndarray) -> pb.Tensor:
    """A Tensor message of ``array``: C order, little-endian bytes, the dtype by its numpy name."""
    array = np.ascontiguousarray(array)
    little = array.astype(array.dtype.newbyteorder("<"), copy=False)
    return pb.Tensor(name=name, dtype=array.dtype.name, shape=list(array.shape), data=little.tobytes())
