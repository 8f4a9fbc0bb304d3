"""``TfliteModel``: read, inspect and write ``.tflite`` files through the schema object API.

Every other part of the project (checker, sessions, the synthetic-model builder)
sees a model only through ``TfliteModel``, so the flatbuffer details (deprecated
opcode fields, buffers stored after the flatbuffer in >2 GB files, file
identifier) are handled in exactly one package. Nothing here parses flatbuffers by
hand: the generated ``ModelT`` does it.
"""
from __future__ import annotations

import io
import zipfile
from pathlib import Path
from typing import Any, Dict, List, Optional, Union

import numpy as np

from edgetpud.hal.runtime import EDGETPU_CUSTOM_OP

from ...errors import ModelError
from .._schema import schema
from ._values import buffer_size, bytes_of, ints, text
from .edit import ModelEditor
from .info import OperatorInfo, SignatureInfo, TensorInfo
from .serialize import LARGE_MODEL_THRESHOLD, SCHEMA_VERSION, ModelSource, pack, pack_large, parse
from .tables import _TYPE_NAMES, PACKED_TYPES, numpy_dtype, opcode_of
from .validation import validate


class TfliteModel(ModelEditor):
    """A mutable in-memory ``.tflite`` model (schema ``ModelT``) with typed inspection helpers.

    Reading, writing and inspection are here; the mutation API is ``ModelEditor``'s.
    """

    # ------------------------------------------------------------------ reading / writing

    @classmethod
    def read(cls, source: ModelSource) -> "TfliteModel":
        """Parse a ``.tflite`` file or its bytes.

        Raises:
            ModelError: missing/unreadable file, not a TFLite flatbuffer, truncated or
                corrupt, no subgraphs, or indices that point outside their tables.
        """
        model, tail, origin = parse(source)
        self = cls(model, origin)
        self._tail = tail
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
            data = pack(self._model) if not large_format else pack_large(self._model)
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

    def validate(self) -> None:
        """Check that every index points inside its table (what the interpreter would trip over).

        Raises:
            ModelError: no subgraphs, or an out-of-range opcode/tensor/buffer/subgraph index.
        """
        validate(self._model, self._origin)

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
        return text(self._model.description)

    @description.setter
    def description(self, value: str) -> None:
        self._model.description = value

    def subgraph_name(self, subgraph: int = 0) -> str:
        return text(self._subgraph(subgraph).name)

    def operators(self, subgraph: int = 0) -> List[OperatorInfo]:
        """The operators of a subgraph in execution order.

        Raises:
            ModelError: no such subgraph.
        """
        result = []
        for i, op in enumerate(self._subgraph(subgraph).operators or []):
            code = self._model.operatorCodes[op.opcodeIndex]
            name, builtin, builtin_code = opcode_of(code)
            options = op.builtinOptions
            if options is None:
                options = getattr(op, "builtinOptions2", None)
            custom = None
            if op.customOptions is not None and np.size(op.customOptions):
                custom = bytes_of(op.customOptions)
            result.append(
                OperatorInfo(
                    index=i,
                    opcode=name,
                    builtin=builtin,
                    version=int(code.version),
                    inputs=ints(op.inputs),
                    outputs=ints(op.outputs),
                    options=options,
                    custom_options=custom,
                    builtin_code=builtin_code,
                    opcode_index=int(op.opcodeIndex),
                    intermediates=ints(op.intermediates),
                )
            )
        return result

    def _tensor_info(self, index: int, tensor: Any) -> TensorInfo:
        q = tensor.quantization
        scales = np.asarray(q.scale if q is not None and q.scale is not None else [], dtype=np.float32)
        zero_points = np.asarray(q.zeroPoint if q is not None and q.zeroPoint is not None else [], dtype=np.int64)
        shape = ints(tensor.shape)
        has_signature = tensor.shapeSignature is not None and len(tensor.shapeSignature) > 0
        signature = ints(tensor.shapeSignature) if has_signature else shape
        return TensorInfo(
            index=index,
            name=text(tensor.name),
            shape=shape,
            shape_signature=signature,
            dtype=numpy_dtype(tensor.type),
            scale=float(scales[0]) if scales.size else 0.0,
            zero_point=int(zero_points[0]) if zero_points.size else 0,
            scales=scales,
            zero_points=zero_points,
            quantized_dimension=int(q.quantizedDimension) if q is not None else 0,
            is_constant=buffer_size(self._model, tensor.buffer) > 0,
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
        return list(ints(self._subgraph(subgraph).inputs))

    def output_indices(self, subgraph: int = 0) -> List[int]:
        return list(ints(self._subgraph(subgraph).outputs))

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
                key=text(sig.signatureKey),
                subgraph=int(sig.subgraphIndex),
                inputs={text(t.name): int(t.tensorIndex) for t in sig.inputs or []},
                outputs={text(t.name): int(t.tensorIndex) for t in sig.outputs or []},
            )
            for sig in self._model.signatureDefs
        ]

    @property
    def metadata(self) -> Dict[str, bytes]:
        """Metadata entries (name -> the bytes of their buffer), e.g. ``min_runtime_version``."""
        return {text(m.name): bytes_of(self._model.buffers[m.buffer].data) for m in self._model.metadata}

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

    def copy(self) -> "TfliteModel":
        """An independent deep copy (through serialization, so it is also a validity check).

        Raises:
            ModelError: the model cannot be serialized.
        """
        clone = TfliteModel.read(self.to_bytes())
        clone._origin = self._origin
        return clone

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
        return [opcode_of(code)[0] for code in self._model.operatorCodes]

    def tensor_data(self, index: int, subgraph: int = 0) -> np.ndarray:
        """A copy of a constant tensor's data, shaped and typed as the tensor.

        Raises:
            ModelError: no such tensor, it has no data, or its type is packed (strings, int4).
        """
        tensor = self._tensor(index, subgraph)
        info = self._tensor_info(index, tensor)
        if not info.is_constant:
            raise ModelError(f"tensor {index} ('{info.name}') has no constant data")
        if info.type_name in PACKED_TYPES:
            raise ModelError(f"tensor {index} ('{info.name}') is {info.type_name}: its data is not a plain array")
        raw = bytes_of(self._model.buffers[tensor.buffer].data)
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
        return bytes_of(self._model.buffers[index].data)

    # ------------------------------------------------------------------ mutation

    def __repr__(self) -> str:
        return f"TfliteModel({self._origin}, subgraphs={self.subgraph_count}, edgetpu={self.is_edgetpu_compiled})"
