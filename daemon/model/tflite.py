"""Read, inspect, mutate and write ``.tflite`` files through the schema object API.

Every other part of the project (checker, sessions, the
synthetic-model builder) sees a model only through ``TfliteModel``, so the
flatbuffer details (deprecated opcode fields, buffers stored after the
flatbuffer in >2 GB files, file identifier) are handled in exactly one place.
Nothing here parses flatbuffers by hand: the generated ``ModelT`` does it.
"""
from __future__ import annotations

import io
import logging
import re
import struct
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import flatbuffers
import numpy as np

from edgetpud.hal.runtime import EDGETPU_CUSTOM_OP

from ..errors import ModelError
from ._schema import schema

log = logging.getLogger(__name__)

FILE_IDENTIFIER = b"TFL3"
SCHEMA_VERSION = 3
# Builtin codes above this live only in OperatorCode.builtin_code (schema v3a).
_PLACEHOLDER_FOR_GREATER_OP_CODES = 127
# A flatbuffer cannot exceed 2 GiB; beyond this much buffer data we store it after the flatbuffer.
LARGE_MODEL_THRESHOLD = (1 << 31) - (64 << 20)
_BUFFER_ALIGNMENT = 16

ModelSource = Union[str, Path, bytes, bytearray, memoryview]
DTypeLike = Union[str, int, type, np.dtype]


def enum_names(enum_cls: type) -> Dict[int, str]:
    """Value -> name of a schema enum class (``ActivationFunctionType``, ``TensorType``...)."""
    return {v: k for k, v in vars(enum_cls).items() if not k.startswith("_") and isinstance(v, int)}


_OP_NAMES: Dict[int, str] = enum_names(schema.BuiltinOperator)
_OP_CODES: Dict[str, int] = {name: code for code, name in _OP_NAMES.items()}
_TYPE_NAMES: Dict[int, str] = enum_names(schema.TensorType)
_TYPE_CODES: Dict[str, int] = {name: code for code, name in _TYPE_NAMES.items()}
_OPTIONS1: Dict[str, int] = {k: v for k, v in vars(schema.BuiltinOptions).items() if isinstance(v, int) and k != "NONE"}
_OPTIONS2: Dict[str, int] = {
    k: v for k, v in vars(getattr(schema, "BuiltinOptions2", object)).items() if isinstance(v, int) and k != "NONE"
}

# numpy dtype of each TensorType; packed/opaque types map to their storage (or object).
_NP_DTYPES: Dict[str, np.dtype] = {
    "FLOAT32": np.dtype(np.float32),
    "FLOAT16": np.dtype(np.float16),
    "FLOAT64": np.dtype(np.float64),
    "INT8": np.dtype(np.int8),
    "INT16": np.dtype(np.int16),
    "INT32": np.dtype(np.int32),
    "INT64": np.dtype(np.int64),
    "UINT8": np.dtype(np.uint8),
    "UINT16": np.dtype(np.uint16),
    "UINT32": np.dtype(np.uint32),
    "UINT64": np.dtype(np.uint64),
    "BOOL": np.dtype(np.bool_),
    "COMPLEX64": np.dtype(np.complex64),
    "COMPLEX128": np.dtype(np.complex128),
    "STRING": np.dtype(object),
    "RESOURCE": np.dtype(object),
    "VARIANT": np.dtype(object),
    "INT4": np.dtype(np.int8),
    "INT2": np.dtype(np.int8),
    "UINT4": np.dtype(np.uint8),
    "BFLOAT16": np.dtype(np.uint16),
    "FLOAT8_E4M3FN": np.dtype(np.uint8),
    "FLOAT8_E5M2": np.dtype(np.uint8),
}
# Types whose bytes are not one numpy element per tensor element.
_PACKED_TYPES = {"STRING", "RESOURCE", "VARIANT", "INT4", "INT2", "UINT4", "BFLOAT16", "FLOAT8_E4M3FN", "FLOAT8_E5M2"}
_NP_TO_TYPE: Dict[np.dtype, str] = {
    dt: name for name, dt in _NP_DTYPES.items() if name not in _PACKED_TYPES
}

# Ops whose options table is not named after the op (the rest follow the naming rule).
_OPTIONS_OVERRIDES: Dict[str, Optional[str]] = {
    "MAX_POOL_2D": "Pool2DOptions",
    "AVERAGE_POOL_2D": "Pool2DOptions",
    "L2_POOL_2D": "Pool2DOptions",
    "MEAN": "ReducerOptions",
    "SUM": "ReducerOptions",
    "REDUCE_MAX": "ReducerOptions",
    "REDUCE_MIN": "ReducerOptions",
    "REDUCE_PROD": "ReducerOptions",
    "REDUCE_ANY": "ReducerOptions",
    "REDUCE_ALL": "ReducerOptions",
    "MAXIMUM": "MaximumMinimumOptions",
    "MINIMUM": "MaximumMinimumOptions",
    "L2_NORMALIZATION": "L2NormOptions",
    "CONCAT_EMBEDDINGS": "ConcatEmbeddingsOptions",
    "LSH_PROJECTION": "LSHProjectionOptions",
    "UNIDIRECTIONAL_SEQUENCE_RNN": "SequenceRNNOptions",
    "RANDOM_STANDARD_NORMAL": "RandomOptions",
    "RANDOM_UNIFORM": "RandomOptions",
    "MULTINOMIAL": "RandomOptions",
    "CONV_3D_TRANSPOSE": "Conv3DOptions",
    "CUSTOM": None,
}


# Inputs a builtin op may leave absent (tensor index -1). The runtime's kernels for these ops read every
# other input without checking for an absent one, and an absent one kills the process that runs them, so
# the reader refuses it. Ops missing here are not checked (their optional inputs are not listed).
_LSTM_OPTIONAL = frozenset({1, 5, 9, 10, 11, 12, 16, 17, 20, 21, 22, 23})
_LSTM_CIFG = (1, 5, 12)  # input gate weights and bias: absent together (coupled input-forget gate) or present
_OPTIONAL_INPUTS: Dict[str, frozenset] = {
    "CONV_2D": frozenset({2}),
    "DEPTHWISE_CONV_2D": frozenset({2}),
    "FULLY_CONNECTED": frozenset({2}),
    "TRANSPOSE_CONV": frozenset({3}),
    "PAD": frozenset({2}),
    "PADV2": frozenset({2}),
    "LSTM": _LSTM_OPTIONAL,
    "UNIDIRECTIONAL_SEQUENCE_LSTM": _LSTM_OPTIONAL,
    **{op: frozenset() for op in (
        "ADD", "SUB", "MUL", "DIV", "ADD_N", "SQUARED_DIFFERENCE", "MAXIMUM", "MINIMUM",
        "CONCATENATION", "SPLIT", "SPLIT_V", "PACK", "UNPACK", "RESHAPE", "SQUEEZE", "EXPAND_DIMS",
        "STRIDED_SLICE", "SLICE", "TRANSPOSE", "TILE", "GATHER", "SPACE_TO_DEPTH", "DEPTH_TO_SPACE",
        "SPACE_TO_BATCH_ND", "BATCH_TO_SPACE_ND", "SOFTMAX", "LOG_SOFTMAX", "LOGISTIC", "TANH", "RELU",
        "RELU6", "RELU_N1_TO_1", "LEAKY_RELU", "PRELU", "HARD_SWISH", "QUANTIZE", "DEQUANTIZE",
        "AVERAGE_POOL_2D", "MAX_POOL_2D", "L2_POOL_2D", "L2_NORMALIZATION", "LOCAL_RESPONSE_NORMALIZATION",
        "MEAN", "SUM", "REDUCE_MAX", "REDUCE_MIN", "REDUCE_PROD", "ARG_MAX", "ARG_MIN",
        "RESIZE_BILINEAR", "RESIZE_NEAREST_NEIGHBOR", "BATCH_MATMUL", "RSQRT", "SQRT", "EXP", "LOG",
        "ABS", "NEG", "CAST", "SHAPE", "FLOOR",
    )},
}
# Kernels that need a bias on quantized (integer) data: without one they read a bias that is not there.
_BIAS_REQUIRED_WHEN_QUANTIZED = frozenset({"CONV_2D", "DEPTHWISE_CONV_2D"})
_INTEGER_TYPES = frozenset({"UINT8", "INT8", "INT16"})


@dataclass(frozen=True)
class TensorInfo:
    """One tensor as a caller needs it: shape, dtype and quantization in plain Python/numpy."""

    index: int
    name: str
    shape: Tuple[int, ...]
    shape_signature: Tuple[int, ...]
    dtype: np.dtype
    scale: float
    zero_point: int
    scales: np.ndarray = field(repr=False, compare=False)
    zero_points: np.ndarray = field(repr=False, compare=False)
    quantized_dimension: int
    is_constant: bool
    buffer: int
    type_name: str = "FLOAT32"
    is_variable: bool = False

    @property
    def quantized(self) -> bool:
        return self.scales.size > 0 and bool(np.any(self.scales != 0))

    @property
    def per_channel(self) -> bool:
        return self.scales.size > 1

    @property
    def is_dynamic(self) -> bool:
        return any(d < 0 for d in self.shape_signature)


@dataclass(frozen=True)
class OperatorInfo:
    """One operator: its resolved opcode name and the live options object of the schema."""

    index: int
    opcode: str  # builtin name ("CONV_2D") or the custom code ("edgetpu-custom-op")
    builtin: bool
    version: int
    inputs: Tuple[int, ...]
    outputs: Tuple[int, ...]
    options: Any = field(default=None, compare=False)  # a schema *OptionsT object or None
    custom_options: Optional[bytes] = field(default=None, repr=False, compare=False)
    builtin_code: int = 0
    opcode_index: int = 0
    intermediates: Tuple[int, ...] = ()


@dataclass(frozen=True)
class SignatureInfo:
    """A signature def: a key, its subgraph and its named input/output tensor indices."""

    key: str
    subgraph: int
    inputs: Dict[str, int]
    outputs: Dict[str, int]


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).decode("utf-8", errors="replace")
    return str(value)


def _ints(values: Any) -> Tuple[int, ...]:
    if values is None:
        return ()
    return tuple(int(v) for v in values)


def _bytes_of(data: Any) -> bytes:
    if data is None:
        return b""
    if isinstance(data, np.ndarray):
        return data.tobytes()
    return bytes(bytearray(data))


def _u8(data: Union[bytes, bytearray, memoryview, np.ndarray, Sequence[int]]) -> np.ndarray:
    """Store buffer bytes as a 1-D uint8 array: the object API packs those in one copy."""
    if isinstance(data, np.ndarray):
        return np.frombuffer(np.ascontiguousarray(data).tobytes(), dtype=np.uint8)
    if isinstance(data, (bytes, bytearray, memoryview)):
        return np.frombuffer(bytes(data), dtype=np.uint8)
    return np.asarray(list(data), dtype=np.uint8)


def op_code(name: str) -> int:
    """The BuiltinOperator value of an op name such as ``"FULLY_CONNECTED"``.

    Raises:
        ModelError: no such builtin operator in this schema.
    """
    try:
        return _OP_CODES[name.upper()]
    except KeyError:
        raise ModelError(f"unknown builtin operator '{name}'") from None


def op_name(code: int) -> str:
    """The BuiltinOperator name of a code; unknown (newer) codes become ``UNKNOWN_<n>``."""
    return _OP_NAMES.get(int(code), f"UNKNOWN_{int(code)}")


def tensor_type(dtype: DTypeLike) -> int:
    """The TensorType value for a numpy dtype, a TensorType name (``"INT8"``) or value.

    Raises:
        ModelError: the dtype has no TensorType.
    """
    if isinstance(dtype, int) and not isinstance(dtype, bool):
        if dtype in _TYPE_NAMES:
            return dtype
        raise ModelError(f"unknown TensorType value {dtype}")
    if isinstance(dtype, str) and dtype.upper() in _TYPE_CODES:
        return _TYPE_CODES[dtype.upper()]
    try:
        np_dtype = np.dtype(dtype)
    except TypeError:
        raise ModelError(f"cannot map dtype {dtype!r} to a TFLite tensor type") from None
    name = _NP_TO_TYPE.get(np_dtype)
    if name is None:
        raise ModelError(f"numpy dtype {np_dtype} has no TFLite tensor type")
    return _TYPE_CODES[name]


def numpy_dtype(type_code: int) -> np.dtype:
    """The numpy dtype a TensorType is stored as (object for strings and resources)."""
    return _NP_DTYPES.get(_TYPE_NAMES.get(int(type_code), ""), np.dtype(object))


def options_type_name(op: str) -> Optional[str]:
    """The union member name of the options table an op takes (``"Conv2DOptions"``), or None."""
    op = op.upper()
    if op in _OPTIONS_OVERRIDES:
        return _OPTIONS_OVERRIDES[op]
    wanted = op.replace("_", "").lower() + "options"
    for name in list(_OPTIONS1) + list(_OPTIONS2):
        if name.lower() == wanted:
            return name
    return None


def default_options(op: str) -> Any:
    """A default-valued ``*OptionsT`` object for an op, or None when it takes no options."""
    name = options_type_name(op)
    if name is None:
        return None
    cls = getattr(schema, name + "T", None)
    return cls() if cls is not None else None


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


def _read_source(source: ModelSource) -> Tuple[bytes, str]:
    if isinstance(source, (bytes, bytearray, memoryview)):
        return bytes(source), "the model bytes"
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


def _unreadable(origin: str, size: int, exc: BaseException) -> str:
    """Say what a failed parse means for the file, in the reader's words rather than struct's or numpy's."""
    reach = _REACH.search(str(exc))
    if reach and int(reach.group(1)) > size:
        return (f"{origin} is truncated or corrupt: it is {size} bytes long, but its tables reach byte "
                f"{reach.group(1)}; a partly copied or downloaded file looks like this, so copy it again")
    return (f"{origin} is truncated or corrupt: its tables point outside the file or hold impossible values "
            f"({type(exc).__name__}: {exc})")


def _precheck(buf: bytes, origin: str) -> None:
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


class TfliteModel:
    """A mutable in-memory ``.tflite`` model (schema ``ModelT``) with typed inspection helpers.

    Indices returned by ``add_*`` are stable: nothing is renumbered unless
    ``remove_unused`` is called.
    """

    def __init__(self, model: Any, origin: str = "the model") -> None:
        self._model = model
        self._origin = origin
        self._tail = b""  # a zip of associated files (labels) appended after the flatbuffer
        for attr in ("operatorCodes", "subgraphs", "buffers", "metadata", "signatureDefs"):
            if getattr(model, attr) is None:
                setattr(model, attr, [])

    # ------------------------------------------------------------------ reading / writing

    @classmethod
    def read(cls, source: ModelSource) -> "TfliteModel":
        """Parse a ``.tflite`` file or its bytes.

        Raises:
            ModelError: missing/unreadable file, not a TFLite flatbuffer, truncated or
                corrupt, no subgraphs, or indices that point outside their tables.
        """
        buf, origin = _read_source(source)
        try:
            _precheck(buf, origin)
            model = schema.ModelT.InitFromPackedBuf(buf, 0)
        except ModelError:
            raise
        except Exception as exc:  # the generated code raises whatever struct/numpy raise on bad offsets
            raise ModelError(_unreadable(origin, len(buf), exc)) from exc
        _load_external_data(model, buf, origin)
        self = cls(model, origin)
        self._tail = _zip_tail(buf)
        self.validate()
        return self

    @classmethod
    def empty(cls, description: str = "edgetpud") -> "TfliteModel":
        """A model with no subgraphs and the mandatory empty buffer 0 (what builders start from)."""
        model = schema.ModelT()
        model.version = SCHEMA_VERSION
        model.description = description
        model.buffers = [schema.BufferT()]
        return cls(model, "the new model")

    def to_bytes(self, large_format: Optional[bool] = None) -> bytes:
        """Serialize to ``.tflite`` bytes (identifier TFL3).

        ``large_format`` stores buffer data after the flatbuffer (offset/size in each
        Buffer), which TFLite needs beyond 2 GiB; by default it is used only then.

        Raises:
            ModelError: the model cannot be packed (e.g. an options object of the wrong type).
        """
        self.validate()
        data_size = sum(int(np.size(b.data)) for b in self._model.buffers if b.data is not None)
        if large_format is None:
            large_format = data_size > LARGE_MODEL_THRESHOLD
        try:
            data = self._pack(self._model) if not large_format else self._pack_large()
            return data + self._tail
        except ModelError:
            raise
        except Exception as exc:
            raise ModelError(f"cannot serialize {self._origin}: {type(exc).__name__}: {exc}") from exc

    def write(self, path: Union[str, Path]) -> None:
        """Write the model to a file (atomically: a temporary file then a rename).

        Raises:
            ModelError: serialization failed.
            OSError: the file cannot be written.
        """
        path = Path(path)
        data = self.to_bytes()
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_bytes(data)
        tmp.replace(path)

    @staticmethod
    def _pack(model: Any) -> bytes:
        builder = _AlignedBuilder(1024)
        builder.Finish(model.Pack(builder), file_identifier=FILE_IDENTIFIER)
        return bytes(builder.Output())

    def _pack_large(self) -> bytes:
        """Pack with buffer data moved after the flatbuffer, offsets from the file start."""
        model = self._model
        saved = [(b.data, b.offset, b.size) for b in model.buffers]
        payloads: List[Optional[bytes]] = []
        try:
            for b in model.buffers:
                payload = _bytes_of(b.data) if b.data is not None and np.size(b.data) else None
                payloads.append(payload)
                if payload is not None:
                    # Non-default placeholders make the packed size independent of the real values.
                    b.data, b.offset, b.size = None, 1, len(payload)
            head_len = len(self._pack(model))
            position = _align(head_len)
            for b, payload in zip(model.buffers, payloads):
                if payload is not None:
                    b.offset = position
                    position = _align(position + len(payload))
            head = self._pack(model)
            if len(head) != head_len:
                raise ModelError("internal error: packed size changed between passes of the large-model writer")
        finally:
            for b, (data, offset, size) in zip(model.buffers, saved):
                b.data, b.offset, b.size = data, offset, size
        out = bytearray(head)
        for payload in payloads:
            if payload is not None:
                out.extend(b"\0" * (_align(len(out)) - len(out)))
                out.extend(payload)
        return bytes(out)

    def validate(self) -> None:
        """Check that every index points inside its table (what the interpreter would trip over).

        Raises:
            ModelError: no subgraphs, or an out-of-range opcode/tensor/buffer/subgraph index.
        """
        m = self._model
        origin = self._origin
        if not m.subgraphs:
            raise ModelError(f"{origin} has no subgraphs: there is nothing to run")
        n_codes, n_buffers = len(m.operatorCodes), len(m.buffers)
        for s, sg in enumerate(m.subgraphs):
            tensors = sg.tensors or []
            n_tensors = len(tensors)
            for t, tensor in enumerate(tensors):
                if not (0 <= tensor.buffer < max(n_buffers, 1)):
                    raise ModelError(
                        f"{origin} is corrupt: tensor {t} of subgraph {s} uses buffer {tensor.buffer}, "
                        f"but there are {n_buffers} buffers"
                    )
                self._check_constant_size(s, t, tensor)
            for what, indices in (("input", sg.inputs), ("output", sg.outputs)):
                for i in _ints(indices):
                    if not (0 <= i < n_tensors):
                        raise ModelError(f"{origin} is corrupt: subgraph {s} {what} tensor {i} does not exist")
            for i in _ints(sg.inputs):
                # The runtime maps constant data read-only: filling such an input kills the process.
                if self._buffer_size(tensors[i].buffer) > 0:
                    raise ModelError(
                        f"{origin} is corrupt: subgraph {s} input tensor {i} ('{_text(tensors[i].name)}') "
                        "holds constant data, but an input is filled at run time"
                    )
            for o, op in enumerate(sg.operators or []):
                if not (0 <= op.opcodeIndex < n_codes):
                    raise ModelError(
                        f"{origin} is corrupt: operator {o} of subgraph {s} uses opcode {op.opcodeIndex}, "
                        f"but there are {n_codes} operator codes"
                    )
                for i in _ints(op.inputs) + _ints(op.outputs) + _ints(op.intermediates):
                    if not (-1 <= i < n_tensors):
                        raise ModelError(
                            f"{origin} is corrupt: operator {o} of subgraph {s} uses tensor {i}, "
                            f"but the subgraph has {n_tensors} tensors"
                        )
                self._check_absent_inputs(s, o, op, tensors)
        for sig in m.signatureDefs:
            if not (0 <= sig.subgraphIndex < len(m.subgraphs)):
                raise ModelError(f"{origin} is corrupt: signature {_text(sig.signatureKey)!r} names a missing subgraph")
        for meta in m.metadata:
            if not (0 <= meta.buffer < n_buffers):
                raise ModelError(f"{origin} is corrupt: metadata {_text(meta.name)!r} uses a missing buffer")

    def _check_constant_size(self, s: int, t: int, tensor: Any) -> None:
        """Refuse constant data of another size than its tensor: the runtime would read past it.

        Sparse tensors (compressed data) and packed types (strings, int4) have no fixed size and are
        not checked.

        Raises:
            ModelError: the buffer holds more or fewer bytes than shape x element size.
        """
        held = self._buffer_size(tensor.buffer)
        type_name = _TYPE_NAMES.get(int(tensor.type))
        if held == 0 or getattr(tensor, "sparsity", None) is not None or type_name is None or type_name in _PACKED_TYPES:
            return
        shape = _ints(tensor.shape)
        count = 1
        for dim in shape:
            count *= dim
        needed = max(count, 0) * _NP_DTYPES[type_name].itemsize
        if held != needed or any(d < 0 for d in shape):
            raise ModelError(
                f"{self._origin} is corrupt: tensor {t} ('{_text(tensor.name)}') of subgraph {s} has shape "
                f"{list(shape)} of {type_name} ({needed} bytes), but its constant data is {held} bytes"
            )

    def _check_absent_inputs(self, s: int, o: int, op: Any, tensors: Sequence[Any]) -> None:
        """Refuse an operator whose kernel would read an input the model leaves absent.

        Raises:
            ModelError: a required input is -1, or a quantized convolution has no bias.
        """
        name, builtin, _ = self._opcode(self._model.operatorCodes[op.opcodeIndex])
        optional = _OPTIONAL_INPUTS.get(name) if builtin else None
        if optional is None:
            return
        inputs = _ints(op.inputs)
        where = f"{self._origin} is corrupt: operator {o} ({name}) of subgraph {s}"
        for position, index in enumerate(inputs):
            if index < 0 and position not in optional:
                raise ModelError(f"{where} leaves its required input {position} absent")
        if name in ("LSTM", "UNIDIRECTIONAL_SEQUENCE_LSTM"):
            present = [p < len(inputs) and inputs[p] >= 0 for p in _LSTM_CIFG]
            if any(present) and not all(present):
                raise ModelError(
                    f"{where} has only some of its input gate tensors (inputs {', '.join(map(str, _LSTM_CIFG))}): "
                    "they are all present, or all absent"
                )
        if name in _BIAS_REQUIRED_WHEN_QUANTIZED and inputs and inputs[0] >= 0:
            if _TYPE_NAMES.get(int(tensors[inputs[0]].type)) in _INTEGER_TYPES and (len(inputs) < 3 or inputs[2] < 0):
                raise ModelError(f"{where} has quantized input but no bias tensor, which its kernel needs")

    # ------------------------------------------------------------------ inspection

    @property
    def raw(self) -> Any:
        """The underlying schema ``ModelT`` (for edits this class has no helper for)."""
        return self._model

    @property
    def version(self) -> int:
        return int(self._model.version)

    @property
    def subgraph_count(self) -> int:
        return len(self._model.subgraphs)

    @property
    def description(self) -> str:
        return _text(self._model.description)

    @description.setter
    def description(self, value: str) -> None:
        self._model.description = value

    def subgraph_name(self, subgraph: int = 0) -> str:
        return _text(self._subgraph(subgraph).name)

    def _subgraph(self, subgraph: int) -> Any:
        if not (0 <= subgraph < len(self._model.subgraphs)):
            raise ModelError(f"subgraph {subgraph} does not exist ({len(self._model.subgraphs)} subgraphs)")
        return self._model.subgraphs[subgraph]

    def _tensor(self, index: int, subgraph: int) -> Any:
        tensors = self._subgraph(subgraph).tensors or []
        if not (0 <= index < len(tensors)):
            raise ModelError(f"tensor {index} does not exist in subgraph {subgraph} ({len(tensors)} tensors)")
        return tensors[index]

    def _opcode(self, code: Any) -> Tuple[str, bool, int]:
        builtin = max(int(code.builtinCode), int(code.deprecatedBuiltinCode))
        if builtin == schema.BuiltinOperator.CUSTOM:
            return _text(code.customCode), False, builtin
        return op_name(builtin), True, builtin

    def operators(self, subgraph: int = 0) -> List[OperatorInfo]:
        """The operators of a subgraph in execution order.

        Raises:
            ModelError: no such subgraph.
        """
        result = []
        for i, op in enumerate(self._subgraph(subgraph).operators or []):
            code = self._model.operatorCodes[op.opcodeIndex]
            name, builtin, builtin_code = self._opcode(code)
            options = op.builtinOptions
            if options is None:
                options = getattr(op, "builtinOptions2", None)
            custom = None
            if op.customOptions is not None and np.size(op.customOptions):
                custom = _bytes_of(op.customOptions)
            result.append(
                OperatorInfo(
                    index=i,
                    opcode=name,
                    builtin=builtin,
                    version=int(code.version),
                    inputs=_ints(op.inputs),
                    outputs=_ints(op.outputs),
                    options=options,
                    custom_options=custom,
                    builtin_code=builtin_code,
                    opcode_index=int(op.opcodeIndex),
                    intermediates=_ints(op.intermediates),
                )
            )
        return result

    def _buffer_size(self, index: int) -> int:
        if not (0 <= index < len(self._model.buffers)):
            return 0
        data = self._model.buffers[index].data
        return 0 if data is None else int(np.size(data))

    def _tensor_info(self, index: int, tensor: Any) -> TensorInfo:
        q = tensor.quantization
        scales = np.asarray(q.scale if q is not None and q.scale is not None else [], dtype=np.float32)
        zero_points = np.asarray(q.zeroPoint if q is not None and q.zeroPoint is not None else [], dtype=np.int64)
        shape = _ints(tensor.shape)
        has_signature = tensor.shapeSignature is not None and len(tensor.shapeSignature) > 0
        signature = _ints(tensor.shapeSignature) if has_signature else shape
        return TensorInfo(
            index=index,
            name=_text(tensor.name),
            shape=shape,
            shape_signature=signature,
            dtype=numpy_dtype(tensor.type),
            scale=float(scales[0]) if scales.size else 0.0,
            zero_point=int(zero_points[0]) if zero_points.size else 0,
            scales=scales,
            zero_points=zero_points,
            quantized_dimension=int(q.quantizedDimension) if q is not None else 0,
            is_constant=self._buffer_size(tensor.buffer) > 0,
            buffer=int(tensor.buffer),
            type_name=_TYPE_NAMES.get(int(tensor.type), f"UNKNOWN_{int(tensor.type)}"),
            is_variable=bool(tensor.isVariable),
        )

    def tensors(self, subgraph: int = 0) -> List[TensorInfo]:
        """Every tensor of a subgraph, indexed as operators refer to them.

        Raises:
            ModelError: no such subgraph.
        """
        return [self._tensor_info(i, t) for i, t in enumerate(self._subgraph(subgraph).tensors or [])]

    def tensor(self, index: int, subgraph: int = 0) -> TensorInfo:
        """One tensor.

        Raises:
            ModelError: no such tensor or subgraph.
        """
        return self._tensor_info(index, self._tensor(index, subgraph))

    def input_indices(self, subgraph: int = 0) -> List[int]:
        return list(_ints(self._subgraph(subgraph).inputs))

    def output_indices(self, subgraph: int = 0) -> List[int]:
        return list(_ints(self._subgraph(subgraph).outputs))

    @property
    def inputs(self) -> List[TensorInfo]:
        """The input tensors of subgraph 0 (the one the interpreter runs)."""
        return [self.tensor(i) for i in self.input_indices()]

    @property
    def outputs(self) -> List[TensorInfo]:
        """The output tensors of subgraph 0."""
        return [self.tensor(i) for i in self.output_indices()]

    @property
    def signatures(self) -> List[SignatureInfo]:
        return [
            SignatureInfo(
                key=_text(sig.signatureKey),
                subgraph=int(sig.subgraphIndex),
                inputs={_text(t.name): int(t.tensorIndex) for t in sig.inputs or []},
                outputs={_text(t.name): int(t.tensorIndex) for t in sig.outputs or []},
            )
            for sig in self._model.signatureDefs
        ]

    @property
    def metadata(self) -> Dict[str, bytes]:
        """Metadata entries (name -> the bytes of their buffer), e.g. ``min_runtime_version``."""
        return {_text(m.name): _bytes_of(self._model.buffers[m.buffer].data) for m in self._model.metadata}

    @property
    def min_runtime_version(self) -> Optional[str]:
        """The converter's ``min_runtime_version`` metadata ("1.14.0"), or None."""
        value = self.metadata.get("min_runtime_version")
        return value.rstrip(b"\0").decode("ascii", errors="replace") if value is not None else None

    @property
    def associated_files(self) -> Dict[str, bytes]:
        """Files zipped after the flatbuffer by the TFLite metadata writer (e.g. ``labels.txt``)."""
        if not self._tail:
            return {}
        with zipfile.ZipFile(io.BytesIO(self._tail)) as archive:
            return {info.filename: archive.read(info) for info in archive.infolist() if not info.is_dir()}

    def set_associated_files(self, files: Optional[Dict[str, bytes]]) -> None:
        """Replace the zip of associated files written after the flatbuffer (None or {} drops it)."""
        if not files:
            self._tail = b""
            return
        out = io.BytesIO()
        with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_STORED) as archive:
            for name, data in files.items():
                archive.writestr(name, data)
        self._tail = out.getvalue()

    def set_signature(
        self, key: str, inputs: Dict[str, int], outputs: Dict[str, int], subgraph: int = 0
    ) -> None:
        """Add or replace a signature def (name -> tensor index), e.g. after changing a subgraph's outputs.

        Raises:
            ModelError: a tensor or the subgraph does not exist.
        """
        for index in list(inputs.values()) + list(outputs.values()):
            self._tensor(index, subgraph)
        sig = schema.SignatureDefT()
        sig.signatureKey, sig.subgraphIndex = key, subgraph
        sig.inputs, sig.outputs = [], []
        for target, mapping in ((sig.inputs, inputs), (sig.outputs, outputs)):
            for name, index in mapping.items():
                entry = schema.TensorMapT()
                entry.name, entry.tensorIndex = name, int(index)
                target.append(entry)
        defs = [d for d in self._model.signatureDefs if _text(d.signatureKey) != key]
        self._model.signatureDefs = defs + [sig]

    def remove_signatures(self) -> None:
        """Drop every signature def (they go stale when inputs or outputs are rewired)."""
        self._model.signatureDefs = []

    def copy(self) -> "TfliteModel":
        """An independent deep copy (through serialization, so it is also a validity check).

        Raises:
            ModelError: the model cannot be serialized.
        """
        clone = TfliteModel.read(self.to_bytes())
        clone._origin = self._origin
        return clone

    def add_metadata(self, name: str, data: bytes) -> None:
        """Add or replace a metadata entry."""
        for meta in self._model.metadata:
            if _text(meta.name) == name:
                meta.buffer = self.add_buffer(data)
                return
        meta = schema.MetadataT()
        meta.name = name
        meta.buffer = self.add_buffer(data)
        self._model.metadata.append(meta)

    @property
    def is_edgetpu_compiled(self) -> bool:
        """True when any subgraph holds an ``edgetpu-custom-op`` (the file needs the delegate)."""
        return self.edgetpu_op_count > 0

    @property
    def edgetpu_op_count(self) -> int:
        # From the opcode table: operators() would copy each op's custom options (the compiled executable).
        names = self.opcodes()
        return sum(
            1 for sg in self._model.subgraphs for op in sg.operators or [] if names[op.opcodeIndex] == EDGETPU_CUSTOM_OP
        )

    def cpu_operators(self, subgraph: int = 0) -> List[OperatorInfo]:
        """Operators that stay on the CPU (everything but ``edgetpu-custom-op``)."""
        return [op for op in self.operators(subgraph) if op.opcode != EDGETPU_CUSTOM_OP]

    def opcodes(self) -> List[str]:
        """Every operator code of the model (builtin names and custom codes), in table order."""
        return [self._opcode(code)[0] for code in self._model.operatorCodes]

    def tensor_data(self, index: int, subgraph: int = 0) -> np.ndarray:
        """A copy of a constant tensor's data, shaped and typed as the tensor.

        Raises:
            ModelError: no such tensor, it has no data, or its type is packed (strings, int4).
        """
        tensor = self._tensor(index, subgraph)
        info = self._tensor_info(index, tensor)
        if not info.is_constant:
            raise ModelError(f"tensor {index} ('{info.name}') has no constant data")
        if info.type_name in _PACKED_TYPES:
            raise ModelError(f"tensor {index} ('{info.name}') is {info.type_name}: its data is not a plain array")
        raw = _bytes_of(self._model.buffers[tensor.buffer].data)
        count = int(np.prod(info.shape, dtype=np.int64)) if info.shape else 1
        if len(raw) != count * info.dtype.itemsize:
            raise ModelError(
                f"tensor {index} ('{info.name}') holds {len(raw)} bytes, but shape {list(info.shape)} "
                f"of {info.type_name} needs {count * info.dtype.itemsize}"
            )
        return np.frombuffer(raw, dtype=info.dtype.newbyteorder("<")).astype(info.dtype).reshape(info.shape)

    def buffer_data(self, index: int) -> bytes:
        """The raw bytes of a buffer (empty for activations)."""
        if not (0 <= index < len(self._model.buffers)):
            raise ModelError(f"buffer {index} does not exist ({len(self._model.buffers)} buffers)")
        return _bytes_of(self._model.buffers[index].data)

    # ------------------------------------------------------------------ mutation

    def add_buffer(self, data: Union[bytes, bytearray, memoryview, np.ndarray, None] = None) -> int:
        """Append a buffer (empty when ``data`` is None) and return its index."""
        buffer = schema.BufferT()
        array = _u8(data) if data is not None else None
        if array is not None and array.size:
            buffer.data = array
        self._model.buffers.append(buffer)
        return len(self._model.buffers) - 1

    def add_subgraph(self, name: Optional[str] = None) -> int:
        """Append an empty subgraph (for IF/WHILE bodies or multi-subgraph tests) and return its index."""
        sg = schema.SubGraphT()
        sg.tensors, sg.operators, sg.inputs, sg.outputs = [], [], [], []
        sg.name = name
        self._model.subgraphs.append(sg)
        return len(self._model.subgraphs) - 1

    def add_tensor(
        self,
        name: str,
        shape: Sequence[int],
        dtype: DTypeLike,
        buffer: Union[int, bytes, np.ndarray, None] = None,
        scale: Union[float, Sequence[float], None] = None,
        zero_point: Union[int, Sequence[int], None] = None,
        scales: Optional[Sequence[float]] = None,
        zero_points: Optional[Sequence[int]] = None,
        quantized_dimension: int = 0,
        shape_signature: Optional[Sequence[int]] = None,
        subgraph: int = 0,
        is_variable: bool = False,
    ) -> int:
        """Append a tensor and return its index.

        ``buffer`` is a buffer index, or data to store in a new buffer; None means an
        activation (a fresh empty buffer). A ``-1`` in ``shape_signature`` marks a
        dynamic dimension (``shape`` then holds 1 there).

        Raises:
            ModelError: unknown dtype, missing subgraph or buffer, mismatched quantization lengths.
        """
        sg = self._subgraph(subgraph)
        tensor = schema.TensorT()
        tensor.name = name
        tensor.shape = [int(d) for d in shape]
        tensor.type = tensor_type(dtype)
        tensor.isVariable = is_variable
        if shape_signature is not None:
            if len(shape_signature) != len(tensor.shape):
                raise ModelError(
                    f"tensor '{name}': shape_signature {list(shape_signature)} and shape {list(shape)} differ in rank"
                )
            tensor.shapeSignature = [int(d) for d in shape_signature]
        if buffer is None:
            tensor.buffer = self.add_buffer(None)
        elif isinstance(buffer, (int, np.integer)) and not isinstance(buffer, bool):
            if not (0 <= int(buffer) < len(self._model.buffers)):
                raise ModelError(f"tensor '{name}': buffer {buffer} does not exist")
            tensor.buffer = int(buffer)
        else:
            tensor.buffer = self.add_buffer(buffer)
        tensor.quantization = _quantization(name, scale, zero_point, scales, zero_points, quantized_dimension)
        sg.tensors.append(tensor)
        return len(sg.tensors) - 1

    def set_tensor_data(
        self,
        index: int,
        array: np.ndarray,
        scale: Union[float, Sequence[float], None] = None,
        zero_point: Union[int, Sequence[int], None] = None,
        subgraph: int = 0,
        quantized_dimension: Optional[int] = None,
    ) -> None:
        """Replace a tensor's constant data (and shape), and its quantization when given.

        A buffer shared with another tensor is not overwritten: the tensor gets its own.

        Raises:
            ModelError: no such tensor, or the array's dtype differs from the tensor's.
        """
        tensor = self._tensor(index, subgraph)
        array = np.asarray(array)
        want = numpy_dtype(tensor.type)
        if array.dtype != want:
            raise ModelError(
                f"tensor {index} ('{_text(tensor.name)}') is {_TYPE_NAMES.get(tensor.type)}: "
                f"got an array of {array.dtype}, cast it first"
            )
        data = np.ascontiguousarray(array, dtype=want.newbyteorder("<"))
        if tensor.buffer == 0 or self._buffer_users(tensor.buffer) > 1:
            tensor.buffer = self.add_buffer(data)
        else:
            self._model.buffers[tensor.buffer].data = _u8(data)
        if tuple(array.shape) != _ints(tensor.shape):
            tensor.shape = list(array.shape)
            tensor.shapeSignature = None
        if scale is not None or zero_point is not None:
            q = tensor.quantization
            qdim = quantized_dimension if quantized_dimension is not None else (q.quantizedDimension if q else 0)
            if scale is None and q is not None and q.scale is not None:
                scale = [float(s) for s in q.scale]
            if zero_point is None and q is not None and q.zeroPoint is not None:
                zero_point = [int(z) for z in q.zeroPoint]
            tensor.quantization = _quantization(_text(tensor.name), scale, zero_point, None, None, qdim)

    def _buffer_users(self, buffer: int) -> int:
        users = sum(1 for sg in self._model.subgraphs for t in sg.tensors or [] if t.buffer == buffer)
        users += sum(1 for m in self._model.metadata if m.buffer == buffer)
        return users

    def _opcode_index(self, op: str, custom_code: Optional[str], version: int) -> int:
        """Find or append the OperatorCode for (op, custom_code, version)."""
        code = op_code(op)
        if code == schema.BuiltinOperator.CUSTOM and not custom_code:
            raise ModelError("a CUSTOM operator needs a custom_code")
        for i, existing in enumerate(self._model.operatorCodes):
            name, builtin, builtin_code = self._opcode(existing)
            if builtin_code != code or int(existing.version) != version:
                continue
            if code != schema.BuiltinOperator.CUSTOM or name == custom_code:
                return i
        entry = schema.OperatorCodeT()
        entry.builtinCode = code
        entry.deprecatedBuiltinCode = min(code, _PLACEHOLDER_FOR_GREATER_OP_CODES)
        entry.version = version
        if code == schema.BuiltinOperator.CUSTOM:
            entry.customCode = custom_code
        self._model.operatorCodes.append(entry)
        return len(self._model.operatorCodes) - 1

    def add_operator(
        self,
        op: str,
        inputs: Sequence[int],
        outputs: Sequence[int],
        options: Any = None,
        custom_code: Optional[str] = None,
        custom_options: Optional[bytes] = None,
        version: int = 1,
        subgraph: int = 0,
        intermediates: Optional[Sequence[int]] = None,
    ) -> int:
        """Append an operator to a subgraph's execution order and return its index.

        ``op`` is a builtin name ("FULLY_CONNECTED") or "CUSTOM" (then ``custom_code``
        names it; passing only ``custom_code`` implies CUSTOM). ``options`` is the
        schema's ``*OptionsT`` object; when omitted the op gets default options, since
        some kernels refuse to run without them. Its union type is set from its class.

        Raises:
            ModelError: unknown op, options of the wrong class, or a tensor index out of range.
        """
        if custom_code and op.upper() != "CUSTOM":
            if op and op.upper() in _OP_CODES:
                raise ModelError(f"custom_code given for the builtin operator {op}")
        op = "CUSTOM" if custom_code else op.upper()
        sg = self._subgraph(subgraph)
        n_tensors = len(sg.tensors)
        for i in list(inputs) + list(outputs) + list(intermediates or []):
            if not (-1 <= int(i) < n_tensors):
                raise ModelError(f"{op}: tensor {i} does not exist in subgraph {subgraph} ({n_tensors} tensors)")
        operator = schema.OperatorT()
        operator.opcodeIndex = self._opcode_index(op, custom_code, version)
        operator.inputs = [int(i) for i in inputs]
        operator.outputs = [int(i) for i in outputs]
        if intermediates:
            operator.intermediates = [int(i) for i in intermediates]
        if options is None:
            options = default_options(op)
        if options is not None:
            _attach_options(operator, op, options)
        if custom_options is not None:
            operator.customOptions = _u8(custom_options)
            operator.customOptionsFormat = schema.CustomOptionsFormat.FLEXBUFFERS
        sg.operators.append(operator)
        return len(sg.operators) - 1

    def set_inputs(self, tensor_indices: Sequence[int], subgraph: int = 0) -> None:
        """Set a subgraph's input tensors.

        Raises:
            ModelError: an index is out of range.
        """
        self._subgraph(subgraph).inputs = self._checked_indices(tensor_indices, subgraph)

    def set_outputs(self, tensor_indices: Sequence[int], subgraph: int = 0) -> None:
        """Set a subgraph's output tensors.

        Raises:
            ModelError: an index is out of range.
        """
        self._subgraph(subgraph).outputs = self._checked_indices(tensor_indices, subgraph)

    def _checked_indices(self, indices: Sequence[int], subgraph: int) -> List[int]:
        result = [int(i) for i in indices]
        for i in result:
            self._tensor(i, subgraph)
        return result

    def remove_unused(self) -> None:
        """Drop buffers and operator codes nothing refers to, renumbering the references.

        Tensors are kept (renumbering them would invalidate indices callers hold).
        """
        m = self._model
        used_codes = sorted({op.opcodeIndex for sg in m.subgraphs for op in sg.operators or []})
        code_map = {old: new for new, old in enumerate(used_codes)}
        m.operatorCodes = [m.operatorCodes[i] for i in used_codes]
        for sg in m.subgraphs:
            for op in sg.operators or []:
                op.opcodeIndex = code_map[op.opcodeIndex]
        used_buffers = {0} | {t.buffer for sg in m.subgraphs for t in sg.tensors or []} | {x.buffer for x in m.metadata}
        keep = sorted(b for b in used_buffers if b < len(m.buffers))
        buffer_map = {old: new for new, old in enumerate(keep)}
        m.buffers = [m.buffers[i] for i in keep]
        for sg in m.subgraphs:
            for t in sg.tensors or []:
                t.buffer = buffer_map[t.buffer]
        for x in m.metadata:
            x.buffer = buffer_map[x.buffer]

    def __repr__(self) -> str:
        return f"TfliteModel({self._origin}, subgraphs={self.subgraph_count}, edgetpu={self.is_edgetpu_compiled})"


def _align(n: int) -> int:
    return (n + _BUFFER_ALIGNMENT - 1) // _BUFFER_ALIGNMENT * _BUFFER_ALIGNMENT


def _as_list(value: Union[float, int, Sequence[Any], np.ndarray, None]) -> Optional[List[Any]]:
    if value is None:
        return None
    return list(np.atleast_1d(np.asarray(value)).tolist())


def _quantization(
    name: str,
    scale: Union[float, Sequence[float], None],
    zero_point: Union[int, Sequence[int], None],
    scales: Optional[Sequence[float]],
    zero_points: Optional[Sequence[int]],
    quantized_dimension: int,
) -> Any:
    """Build QuantizationParametersT from per-tensor and/or per-channel values (None: not quantized).

    Raises:
        ModelError: scale and zero point counts differ.
    """
    s = _as_list(scales) if scales is not None else _as_list(scale)
    z = _as_list(zero_points) if zero_points is not None else _as_list(zero_point)
    if s is None and z is None:
        return None
    if s is None:
        s = [0.0] * len(z or [])
    if z is None:
        z = [0] * len(s)
    if len(s) != len(z):
        raise ModelError(f"tensor '{name}': {len(s)} scales but {len(z)} zero points")
    q = schema.QuantizationParametersT()
    q.scale = [float(v) for v in s]
    q.zeroPoint = [int(v) for v in z]
    q.quantizedDimension = int(quantized_dimension)
    return q


def _attach_options(operator: Any, op: str, options: Any) -> None:
    """Put an ``*OptionsT`` object in the right union (builtin_options or builtin_options_2).

    Raises:
        ModelError: the object is not an options table, or not the one this op reads.
    """
    cls_name = type(options).__name__
    member = cls_name[:-1] if cls_name.endswith("T") else cls_name
    expected = options_type_name(op)
    if expected is not None and member != expected:
        raise ModelError(f"{op} takes {expected}T options, got {cls_name}")
    if member in _OPTIONS1:
        operator.builtinOptionsType = _OPTIONS1[member]
        operator.builtinOptions = options
    elif member in _OPTIONS2:
        operator.builtinOptions2Type = _OPTIONS2[member]
        operator.builtinOptions2 = options
    else:
        raise ModelError(f"{cls_name} is not a TFLite builtin options type")


def _zip_tail(buf: bytes) -> bytes:
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


def _load_external_data(model: Any, buf: bytes, origin: str) -> None:
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
