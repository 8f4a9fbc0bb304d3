"""``.tflite`` bytes in and out: the file's structure around the flatbuffer the object API parses.

A first look at the bytes (``precheck``) keeps garbage from the object API, which
could loop for ages on it; buffers stored after the flatbuffer (the >2 GiB format)
are pulled inline on reading and moved out on writing; a zip of associated files
(labels) may follow the flatbuffer.
"""
from __future__ import annotations

import io
import re
import struct
import zipfile
from pathlib import Path
from typing import Any, List, Optional, Tuple, Union

import flatbuffers
import numpy as np

from ...errors import ModelError
from .._schema import schema
from ._values import bytes_of

FILE_IDENTIFIER = b"TFL3"
SCHEMA_VERSION = 3
# A flatbuffer cannot exceed 2 GiB; beyond this much buffer data we store it after the flatbuffer.
LARGE_MODEL_THRESHOLD = (1 << 31) - (64 << 20)
_BUFFER_ALIGNMENT = 16

ModelSource = Union[str, Path, bytes, bytearray, memoryview]


class _AlignedBuilder(flatbuffers.Builder):
    """A Builder that aligns byte vectors (tensor data) to 16 bytes, as the TFLite converter does."""

    def CreateNumpyVector(self, x: np.ndarray) -> int:  # noqa: N802 (flatbuffers API name)
        self._align_bytes = x.dtype.itemsize == 1 and x.size >= _BUFFER_ALIGNMENT
        try:
            return super().CreateNumpyVector(x)
        finally:
            self._align_bytes = False

    def StartVector(self, elemSize: int, numElems: int, alignment: int = 1) -> int:  # noqa: N802,N803
        if getattr(self, "_align_bytes", False):
            alignment = max(alignment, _BUFFER_ALIGNMENT)
        return super().StartVector(elemSize, numElems, alignment)


def read_source(source: ModelSource) -> Tuple[bytes, str]:
    """The bytes and how messages name them: a singular noun, since every message goes on "... is truncated"."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        return bytes(source), "the model data"
    path = Path(source)
    try:
        return path.read_bytes(), f"model file {path}"
    except FileNotFoundError:
        raise ModelError(f"model file {path} does not exist") from None
    except IsADirectoryError:
        raise ModelError(f"model path {path} is a folder, not a .tflite file") from None
    except OSError as exc:
        raise ModelError(f"cannot read model file {path}: {exc.strerror or exc}") from exc


_REACH = re.compile(r"at least (\d+) bytes")


def unreadable(origin: str, size: int, exc: BaseException) -> str:
    """Say what a failed parse means for the file, in the reader's words rather than struct's or numpy's."""
    reach = _REACH.search(str(exc))
    if reach and int(reach.group(1)) > size:
        return (f"{origin} is truncated or corrupt: it is {size} bytes long, but its tables reach byte "
                f"{reach.group(1)}; a partly copied or downloaded file looks like this, so copy it again")
    return (f"{origin} is truncated or corrupt: its tables point outside the file or hold impossible values "
            f"({type(exc).__name__}: {exc})")


def precheck(buf: bytes, origin: str) -> None:
    """Cheap structural checks so garbage never reaches the object API (which could loop for ages).

    Raises:
        ModelError: too short, wrong identifier, root or vector lengths out of range.
    """
    if len(buf) == 0:
        raise ModelError(f"{origin} is empty: not a TFLite model")
    if len(buf) < 8:
        raise ModelError(f"{origin} is only {len(buf)} bytes: too short to be a TFLite model")
    if not schema.Model.ModelBufferHasIdentifier(buf, 0):
        raise ModelError(
            f"{origin} is not a TFLite model: file identifier is {buf[4:8]!r}, expected {FILE_IDENTIFIER!r}"
        )
    (root,) = struct.unpack_from("<I", buf, 0)
    if root < 8 or root + 4 > len(buf):
        raise ModelError(f"{origin} is truncated or corrupt: root table offset {root} is outside the {len(buf)} bytes")
    limit = len(buf) // 4
    model = schema.Model.GetRootAs(buf, 0)
    counts = {
        "operator codes": model.OperatorCodesLength(),
        "subgraphs": model.SubgraphsLength(),
        "buffers": model.BuffersLength(),
        "metadata": model.MetadataLength(),
        "signatures": model.SignatureDefsLength(),
    }
    for what, count in counts.items():
        if count > limit:
            raise ModelError(f"{origin} is corrupt: it claims {count} {what} in {len(buf)} bytes")
    total = 0
    for i in range(counts["subgraphs"]):
        subgraph = model.Subgraphs(i)
        total += subgraph.TensorsLength() + subgraph.OperatorsLength()
        if total > limit:
            raise ModelError(f"{origin} is corrupt: subgraph {i} claims more tensors/operators than fit in the file")


def parse(source: ModelSource) -> Tuple[Any, bytes, str]:
    """Read and parse a model: its ``ModelT`` (buffers inline), the zip after it (or b""), and its origin.

    Raises:
        ModelError: missing/unreadable file, not a TFLite flatbuffer, truncated or corrupt.
    """
    buf, origin = read_source(source)
    try:
        precheck(buf, origin)
        model = schema.ModelT.InitFromPackedBuf(buf, 0)
    except ModelError:
        raise
    except Exception as exc:  # the generated code raises whatever struct/numpy raise on bad offsets
        raise ModelError(unreadable(origin, len(buf), exc)) from exc
    load_external_data(model, buf, origin)
    return model, zip_tail(buf), origin


def pack(model: Any) -> bytes:
    """Serialize a ``ModelT`` into one flatbuffer with the TFLite file identifier."""
    builder = _AlignedBuilder(1024)
    builder.Finish(model.Pack(builder), file_identifier=FILE_IDENTIFIER)
    return bytes(builder.Output())


def pack_large(model: Any) -> bytes:
    """Pack with buffer data moved after the flatbuffer, offsets from the file start."""
    saved = [(b.data, b.offset, b.size) for b in model.buffers]
    payloads: List[Optional[bytes]] = []
    try:
        for b in model.buffers:
            payload = bytes_of(b.data) if b.data is not None and np.size(b.data) else None
            payloads.append(payload)
            if payload is not None:
                # Non-default placeholders make the packed size independent of the real values.
                b.data, b.offset, b.size = None, 1, len(payload)
        head_len = len(pack(model))
        position = align(head_len)
        for b, payload in zip(model.buffers, payloads):
            if payload is not None:
                b.offset = position
                position = align(position + len(payload))
        head = pack(model)
        if len(head) != head_len:
            raise ModelError("internal error: packed size changed between passes of the large-model writer")
    finally:
        for b, (data, offset, size) in zip(model.buffers, saved):
            b.data, b.offset, b.size = data, offset, size
    out = bytearray(head)
    for payload in payloads:
        if payload is not None:
            out.extend(b"\0" * (align(len(out)) - len(out)))
            out.extend(payload)
    return bytes(out)


def align(n: int) -> int:
    return (n + _BUFFER_ALIGNMENT - 1) // _BUFFER_ALIGNMENT * _BUFFER_ALIGNMENT


def zip_tail(buf: bytes) -> bytes:
    """The zip archive (associated files) appended after the flatbuffer, or b"" when there is none."""
    if b"PK\x05\x06" not in buf[-(1 << 16) - 22:]:
        return b""
    try:
        with zipfile.ZipFile(io.BytesIO(buf)) as archive:
            infos = archive.infolist()
    except (zipfile.BadZipFile, OSError, ValueError, EOFError):
        return b""
    if not infos:
        return b""
    start = min(info.header_offset for info in infos)
    if start < 8 or buf[start:start + 4] != b"PK\x03\x04":
        return b""
    return buf[start:]


def load_external_data(model: Any, buf: bytes, origin: str) -> None:
    """Pull buffer data and custom options stored after the flatbuffer (>2 GiB format) inline.

    Raises:
        ModelError: an offset/size points outside the file.
    """
    for i, b in enumerate(model.buffers or []):
        if b.offset > 1 and b.size > 0:
            if b.offset + b.size > len(buf):
                raise ModelError(f"{origin} is truncated: buffer {i} data lies beyond the end of the file")
            b.data = np.frombuffer(buf, dtype=np.uint8, count=b.size, offset=b.offset)
            b.offset, b.size = 0, 0
    for sg in model.subgraphs or []:
        for op in sg.operators or []:
            offset = getattr(op, "largeCustomOptionsOffset", 0)
            size = getattr(op, "largeCustomOptionsSize", 0)
            if offset > 1 and size > 0:
                if offset + size > len(buf):
                    raise ModelError(f"{origin} is truncated: custom options lie beyond the end of the file")
                op.customOptions = np.frombuffer(buf, dtype=np.uint8, count=size, offset=offset)
                op.largeCustomOptionsOffset, op.largeCustomOptionsSize = 0, 0
