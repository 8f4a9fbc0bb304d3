"""The mutation API: add buffers, tensors, operators and subgraphs, rewire inputs and outputs.

The checker's tests and the synthetic-model builder make their models with it, and
the retraining export appends heads with it. Indices it returns are stable:
nothing is renumbered unless ``remove_unused`` is called.
"""
from __future__ import annotations

import io
import zipfile
from typing import Any, Dict, List, Optional, Sequence, Union

import numpy as np

from ...errors import ModelError
from .._schema import schema
from ._values import ints, text, u8
from .base import ModelBase
from .tables import (
    _OP_CODES, _OPTIONS1, _OPTIONS2, _TYPE_NAMES, PLACEHOLDER_FOR_GREATER_OP_CODES, DTypeLike, default_options,
    numpy_dtype, op_code, opcode_of, options_type_name, tensor_type,
)


#: The earliest time a zip entry can hold.
ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)


class ModelEditor(ModelBase):
    """Edits of a model in place (``TfliteModel`` is one)."""

    def set_associated_files(self, files: Optional[Dict[str, bytes]]) -> None:
        """Replace the zip of associated files written after the flatbuffer (None or {} drops it)."""
        if not files:
            self._tail = b""
            return
        out = io.BytesIO()
        with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_STORED) as archive:
            for name, data in files.items():
                # a fixed time: the same model and files make the same bytes (an export is reproducible)
                archive.writestr(zipfile.ZipInfo(name, date_time=ZIP_EPOCH), data)
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
        defs = [d for d in self._model.signatureDefs if text(d.signatureKey) != key]
        self._model.signatureDefs = defs + [sig]

    def remove_signatures(self) -> None:
        """Drop every signature def (they go stale when inputs or outputs are rewired)."""
        self._model.signatureDefs = []

    def add_metadata(self, name: str, data: bytes) -> None:
        """Add or replace a metadata entry."""
        for meta in self._model.metadata:
            if text(meta.name) == name:
                meta.buffer = self.add_buffer(data)
                return
        meta = schema.MetadataT()
        meta.name = name
        meta.buffer = self.add_buffer(data)
        self._model.metadata.append(meta)

    def add_buffer(self, data: Union[bytes, bytearray, memoryview, np.ndarray, None] = None) -> int:
        """Append a buffer (empty when ``data`` is None) and return its index."""
        buffer = schema.BufferT()
        array = u8(data) if data is not None else None
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
                f"tensor {index} ('{text(tensor.name)}') is {_TYPE_NAMES.get(tensor.type)}: "
                f"got an array of {array.dtype}, cast it first"
            )
        data = np.ascontiguousarray(array, dtype=want.newbyteorder("<"))
        if tensor.buffer == 0 or self._buffer_users(tensor.buffer) > 1:
            tensor.buffer = self.add_buffer(data)
        else:
            self._model.buffers[tensor.buffer].data = u8(data)
        if tuple(array.shape) != ints(tensor.shape):
            tensor.shape = list(array.shape)
            tensor.shapeSignature = None
        if scale is not None or zero_point is not None:
            q = tensor.quantization
            qdim = quantized_dimension if quantized_dimension is not None else (q.quantizedDimension if q else 0)
            if scale is None and q is not None and q.scale is not None:
                scale = [float(s) for s in q.scale]
            if zero_point is None and q is not None and q.zeroPoint is not None:
                zero_point = [int(z) for z in q.zeroPoint]
            tensor.quantization = _quantization(text(tensor.name), scale, zero_point, None, None, qdim)

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
            name, builtin, builtin_code = opcode_of(existing)
            if builtin_code != code or int(existing.version) != version:
                continue
            if code != schema.BuiltinOperator.CUSTOM or name == custom_code:
                return i
        entry = schema.OperatorCodeT()
        entry.builtinCode = code
        entry.deprecatedBuiltinCode = min(code, PLACEHOLDER_FOR_GREATER_OP_CODES)
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
            operator.customOptions = u8(custom_options)
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
