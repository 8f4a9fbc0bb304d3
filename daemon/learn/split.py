"""Find a classifier's head and cut the model at the head's input.

A classifier whose last layer runs on the CPU ends ``SOFTMAX <- [RESHAPE|SQUEEZE]
<- FULLY_CONNECTED | 1x1 CONV_2D`` on a ``[1, D]`` or ``[1, 1, 1, D]`` tensor: that
tensor is the embedding. Cutting there gives a base model (same graph, the
embedding as its output) that still runs where the original did, and the
pretrained head as a ``LinearHead`` (dequantized weights) that the CPU runs in
NumPy next to imprinted classes. When the head lives inside a compiled
``edgetpu-custom-op`` its weights cannot be read and the op cannot be cut, so
the caller is told what to do instead.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Set, Tuple, Union

import numpy as np

from edgetpud.daemon.errors import PreconditionError
from edgetpud.hal.runtime import EDGETPU_CUSTOM_OP

from ..model.tflite import OperatorInfo, TensorInfo, TfliteModel
from .head import LinearHead

ModelLike = Union[TfliteModel, bytes, bytearray, str, Path]

#: Shape-only ops allowed between the linear layer and the softmax.
_SHAPE_OPS = ("RESHAPE", "SQUEEZE")
_LINEAR_OPS = ("FULLY_CONNECTED", "CONV_2D")
#: Metadata that describes the original outputs (labels, score semantics): stale once the graph is cut.
_OUTPUT_METADATA = ("TFLITE_METADATA",)


@dataclass(frozen=True)
class Split:
    """A classifier cut at its head's input."""

    base: bytes  # the model with the embedding as its only output
    head: LinearHead  # the pretrained head, normalize=False
    embedding_name: str  # the cut tensor's name (the same in both twins)
    embedding_index: int  # its index in the original model
    dim: int


@dataclass(frozen=True)
class _Tail:
    """The head's operators in the original graph."""

    softmax: OperatorInfo
    linear: OperatorInfo
    embedding: TensorInfo


def _as_model(model: ModelLike) -> TfliteModel:
    return model if isinstance(model, TfliteModel) else TfliteModel.read(model)


def _embedding_dim(info: TensorInfo) -> Optional[int]:
    """D for a ``[1, D]`` or ``[1, 1, 1, D]`` tensor, else None."""
    shape = tuple(info.shape)
    if len(shape) == 2 and shape[0] == 1 and shape[1] > 1:
        return int(shape[1])
    if len(shape) == 4 and shape[:3] == (1, 1, 1) and shape[3] > 1:
        return int(shape[3])
    return None


def embedding_output(model: ModelLike) -> Tuple[int, int]:
    """``(tensor index, D)`` of a model whose one output is an embedding (``[1, D]`` or ``[1, 1, 1, D]``).

    Raises:
        PreconditionError: more than one output, or an output of another shape or type.
    """
    m = _as_model(model)
    outputs = m.outputs
    if len(outputs) != 1:
        raise PreconditionError(
            f"a model with {len(outputs)} outputs has no usable embedding: imprinting needs one output "
            "of shape [1, D] or [1, 1, 1, D] (a detector or a multi-head model cannot be retrained this way)")
    out = outputs[0]
    dim = _embedding_dim(out)
    if dim is None or out.dtype not in (np.dtype(np.uint8), np.dtype(np.int8), np.dtype(np.float32)):
        raise PreconditionError(
            f"output '{out.name}' ({out.type_name} {list(out.shape)}) is not an embedding: imprinting needs "
            "one uint8, int8 or float32 output of shape [1, D] or [1, 1, 1, D]")
    return out.index, dim


def _producers(ops: Sequence[OperatorInfo]) -> Dict[int, OperatorInfo]:
    return {t: op for op in ops for t in op.outputs if t >= 0}


def _find_tail(m: TfliteModel) -> _Tail:
    """Walk back from the output through the head's ops.

    Raises:
        PreconditionError: no CPU head on an embedding (why, and what to do when it is compiled in).
    """
    outputs = m.output_indices()
    if len(outputs) != 1:
        raise PreconditionError(
            f"the model has {len(outputs)} outputs: a classifier's head ends in one SOFTMAX output, so there "
            "is no usable embedding to retrain (a detector cannot keep its classes this way)")
    ops = m.operators()
    producer = _producers(ops)
    op = producer.get(outputs[0])
    if op is not None and op.opcode == EDGETPU_CUSTOM_OP:
        raise _compiled_head(m)
    if op is None or op.opcode != "SOFTMAX":
        last = op.opcode if op is not None else "no operator"
        raise PreconditionError(
            f"the model's output comes from {last}, not SOFTMAX: it is not a classifier whose head "
            "(FULLY_CONNECTED or 1x1 CONV_2D, then SOFTMAX) can be found, so it has no usable embedding")
    softmax = op
    tensor = softmax.inputs[0]
    linear = producer.get(tensor)
    while linear is not None and linear.opcode in _SHAPE_OPS:
        linear = producer.get(linear.inputs[0])
    if linear is not None and linear.opcode == EDGETPU_CUSTOM_OP:
        raise _compiled_head(m)
    if linear is None or linear.opcode not in _LINEAR_OPS:
        found = linear.opcode if linear is not None else "a model input"
        raise PreconditionError(
            f"the SOFTMAX's logits come from {found}, not from FULLY_CONNECTED or a 1x1 CONV_2D: the model "
            "has no linear head on an embedding to keep classes of")
    embedding = m.tensor(linear.inputs[0])
    weights = m.tensor(linear.inputs[1])
    if _embedding_dim(embedding) is None:
        raise PreconditionError(
            f"the head's input '{embedding.name}' has shape {list(embedding.shape)}, not [1, D] or [1, 1, 1, D]: "
            "no usable embedding")
    if linear.opcode == "CONV_2D" and tuple(weights.shape[1:3]) != (1, 1):
        raise PreconditionError(f"the head's CONV_2D has a {weights.shape[1]}x{weights.shape[2]} kernel, not 1x1")
    activation = getattr(linear.options, "fusedActivationFunction", 0)
    if activation:
        raise PreconditionError(
            f"the head's {linear.opcode} has a fused activation: its outputs are not plain logits to keep")
    if not weights.is_constant:
        raise PreconditionError(f"the head's {linear.opcode} weights are not constant: there is no head to read")
    return _Tail(softmax, linear, embedding)


class CompiledHeadError(PreconditionError):
    """The head is inside an ``edgetpu-custom-op``: the message says how to get a model that can be cut."""


def _compiled_head(m: TfliteModel, name: Optional[str] = None) -> CompiledHeadError:
    target = f"'{name}'" if name else "<the head's input tensor, named by splitting the CPU twin>"
    return CompiledHeadError(
        "the classifier's head is compiled into the Edge TPU's edgetpu-custom-op: its weights cannot be read "
        "and the model cannot be cut there. Serve the CPU twin instead (a bundle without model_edgetpu.tflite), "
        "or recompile the CPU twin with the embedding as an output of the Edge TPU op: "
        f"edgetpu_compiler --intermediate_tensors {target} model.tflite")


def _dequantized(m: TfliteModel, info: TensorInfo) -> np.ndarray:
    """Constant data as float64, per-tensor or per-channel."""
    data = m.tensor_data(info.index).astype(np.float64)
    if not info.quantized:
        return data
    shape = [1] * data.ndim
    if info.per_channel:
        shape[info.quantized_dimension] = -1
    scales = info.scales.astype(np.float64).reshape(shape)
    zeros = info.zero_points.astype(np.float64).reshape(shape) if info.zero_points.size else 0.0
    return (data - zeros) * scales


def _pretrained_head(m: TfliteModel, tail: _Tail, labels: Mapping[int, str]) -> LinearHead:
    linear = tail.linear
    weights = _dequantized(m, m.tensor(linear.inputs[1]))
    classes = int(weights.shape[0])
    matrix = weights.reshape(classes, -1).T  # [D, K]
    if len(linear.inputs) > 2 and linear.inputs[2] >= 0:
        bias = _dequantized(m, m.tensor(linear.inputs[2])).reshape(-1)
    else:
        bias = np.zeros(classes)
    beta = float(getattr(tail.softmax.options, "beta", 1.0) or 1.0)  # softmax(beta * z): fold beta in
    names = tuple(str(labels.get(k, k)) for k in range(classes))
    return LinearHead(matrix * beta, bias * beta, names, ("pretrained",) * classes, normalize=False,
                      info={"method": "pretrained", "embedding": tail.embedding.name})


def _ancestors(ops: Sequence[OperatorInfo], targets: Sequence[int]) -> List[int]:
    """Indices of the operators that ``targets`` depend on, in execution order."""
    producer = {t: op.index for op in ops for t in op.outputs if t >= 0}
    needed: Set[int] = set()
    todo = list(targets)
    while todo:
        index = producer.get(todo.pop())
        if index is None or index in needed:
            continue
        needed.add(index)
        todo.extend(t for t in ops[index].inputs if t >= 0)
    return sorted(needed)


def cut_at(model: ModelLike, tensor: int) -> bytes:
    """The model's graph up to ``tensor``, which becomes its only output; unused tensors and buffers dropped.

    Raises:
        ModelError: the tensor does not exist, or the result does not serialize.
    """
    m = _as_model(model).copy()
    m.tensor(tensor)
    raw = m.raw
    sg = raw.subgraphs[0]
    keep = _ancestors(m.operators(), [tensor])
    sg.operators = [sg.operators[i] for i in keep]
    used: Set[int] = set(int(i) for i in sg.inputs) | {tensor}
    for op in sg.operators:
        used.update(int(i) for i in list(op.inputs) + list(op.outputs) + list(op.intermediates or []) if i >= 0)
    order = sorted(used)
    renumber = {old: new for new, old in enumerate(order)}
    sg.tensors = [sg.tensors[i] for i in order]

    def fix(indices: Any) -> List[int]:
        return [renumber[int(i)] if int(i) >= 0 else -1 for i in indices]

    for op in sg.operators:
        op.inputs, op.outputs = fix(op.inputs), fix(op.outputs)
        if op.intermediates is not None and len(op.intermediates):
            op.intermediates = fix(op.intermediates)
    sg.inputs, sg.outputs = fix(sg.inputs), [renumber[tensor]]
    raw.metadata = [x for x in raw.metadata if (x.name.decode() if isinstance(x.name, bytes) else x.name)
                    not in _OUTPUT_METADATA]
    had_signature = [s for s in m.signatures if s.subgraph == 0]
    m.remove_signatures()
    if had_signature:
        inputs = {m.tensor(i).name: i for i in m.input_indices()}
        m.set_signature(had_signature[0].key, inputs, {"embedding": renumber[tensor]})
    m.set_associated_files(None)  # the original's label file describes the cut-off scores
    m.remove_unused()
    return m.to_bytes()


def find_embedding(model: ModelLike) -> Tuple[int, str, int]:
    """``(index, name, D)`` of the head's input tensor of a classifier with a CPU head.

    Raises:
        PreconditionError: as ``split_classifier``.
    """
    m = _as_model(model)
    tail = _find_tail(m)
    dim = _embedding_dim(tail.embedding)
    assert dim is not None
    return tail.embedding.index, tail.embedding.name, dim


def split_classifier(model: ModelLike, labels: Optional[Mapping[int, str]] = None,
                     cpu_twin: Optional[ModelLike] = None) -> Split:
    """Cut a classifier at its head's input: the base model and the pretrained head.

    ``labels`` maps class index to name (a missing one becomes the index as text).
    ``cpu_twin`` (for a compiled ``model``) lets a refusal name the tensor to recompile with.

    Raises:
        PreconditionError: the head is inside an ``edgetpu-custom-op``, or there is no usable embedding.
        ModelError: the model cannot be read or written.
    """
    m = _as_model(model)
    try:
        tail = _find_tail(m)
    except CompiledHeadError:
        if cpu_twin is None:
            raise
        _, name, _ = find_embedding(cpu_twin)
        raise _compiled_head(m, name) from None
    dim = _embedding_dim(tail.embedding)
    assert dim is not None
    head = _pretrained_head(m, tail, labels or {})
    if head.dim != dim:
        raise PreconditionError(f"the head's weights take {head.dim} values, but its input '{tail.embedding.name}' "
                                f"has {dim}: not a linear head on that embedding")
    return Split(cut_at(m, tail.embedding.index), head, tail.embedding.name, tail.embedding.index, dim)


__all__ = ["CompiledHeadError", "Split", "cut_at", "embedding_output", "find_embedding", "split_classifier"]
