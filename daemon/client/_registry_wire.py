"""The two KServe shared-memory registry requests the client sends, written without the KServe stubs.

edgetpud's KServe stubs and tritonclient's declare the same protobuf package
(``inference``): a process that imports both fails with "duplicate symbol". A camera
app may well use tritonclient beside this library, so the client never imports
those stubs; these messages are small enough to write field by field.
``tests/test_shared_frames.py`` checks the bytes against the stubs.
"""
from __future__ import annotations

from edgetpud.daemon.wire import LENGTH_DELIMITED, encode_varint

REGISTER = "/inference.GRPCInferenceService/SystemSharedMemoryRegister"
UNREGISTER = "/inference.GRPCInferenceService/SystemSharedMemoryUnregister"
_VARINT = 0


def _text(number: int, value: str) -> bytes:
    data = value.encode()
    return encode_varint(number << 3 | LENGTH_DELIMITED) + encode_varint(len(data)) + data if data else b""


def _number(number: int, value: int) -> bytes:
    return encode_varint(number << 3 | _VARINT) + encode_varint(value) if value else b""


def register_request(name: str, key: str, offset: int, byte_size: int) -> bytes:
    """SystemSharedMemoryRegisterRequest{name = 1, key = 2, offset = 3, byte_size = 4} (uint64s)."""
    if not (0 <= offset < 2 ** 64 and 0 <= byte_size < 2 ** 64):  # uint64 fields
        raise ValueError(f"offset and byte_size must be from 0 to 2**64 - 1, got {offset} and {byte_size}")
    return _text(1, name) + _text(2, key) + _number(3, offset) + _number(4, byte_size)


def unregister_request(name: str) -> bytes:
    """SystemSharedMemoryUnregisterRequest{name = 1} (empty: every region)."""
    return _text(1, name)
