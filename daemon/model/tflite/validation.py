"""What a model must satisfy before the runtime sees it: indices in range, and inputs its kernels read.

The TFLite runtime trusts a model's tables: an index out of range, constant data
of the wrong size or an absent input a kernel reads kills the process that runs
it. The reader refuses such a model instead, with a message saying which table is wrong.
"""
from __future__ import annotations

from typing import Any, Dict, Sequence

from ...errors import ModelError
from ._values import buffer_size, ints, text
from .tables import _NP_DTYPES, _TYPE_NAMES, PACKED_TYPES, opcode_of


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


def validate(m: Any, origin: str) -> None:
    """Check that every index points inside its table (what the interpreter would trip over).

    Raises:
        ModelError: no subgraphs, or an out-of-range opcode/tensor/buffer/subgraph index.
    """
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
            _check_constant_size(m, origin, s, t, tensor)
        for what, indices in (("input", sg.inputs), ("output", sg.outputs)):
            for i in ints(indices):
                if not (0 <= i < n_tensors):
                    raise ModelError(f"{origin} is corrupt: subgraph {s} {what} tensor {i} does not exist")
        for i in ints(sg.inputs):
            # The runtime maps constant data read-only: filling such an input kills the process.
            if buffer_size(m, tensors[i].buffer) > 0:
                raise ModelError(
                    f"{origin} is corrupt: subgraph {s} input tensor {i} ('{text(tensors[i].name)}') "
                    "holds constant data, but an input is filled at run time"
                )
        for o, op in enumerate(sg.operators or []):
            if not (0 <= op.opcodeIndex < n_codes):
                raise ModelError(
                    f"{origin} is corrupt: operator {o} of subgraph {s} uses opcode {op.opcodeIndex}, "
                    f"but there are {n_codes} operator codes"
                )
            for i in ints(op.inputs) + ints(op.outputs) + ints(op.intermediates):
                if not (-1 <= i < n_tensors):
                    raise ModelError(
                        f"{origin} is corrupt: operator {o} of subgraph {s} uses tensor {i}, "
                        f"but the subgraph has {n_tensors} tensors"
                    )
            _check_absent_inputs(m, origin, s, o, op, tensors)
    for sig in m.signatureDefs:
        if not (0 <= sig.subgraphIndex < len(m.subgraphs)):
            raise ModelError(f"{origin} is corrupt: signature {text(sig.signatureKey)!r} names a missing subgraph")
    for meta in m.metadata:
        if not (0 <= meta.buffer < n_buffers):
            raise ModelError(f"{origin} is corrupt: metadata {text(meta.name)!r} uses a missing buffer")

def _check_constant_size(m: Any, origin: str, s: int, t: int, tensor: Any) -> None:
    """Refuse constant data of another size than its tensor: the runtime would read past it.

    Sparse tensors (compressed data) and packed types (strings, int4) have no fixed size and are
    not checked.

    Raises:
        ModelError: the buffer holds more or fewer bytes than shape x element size.
    """
    held = buffer_size(m, tensor.buffer)
    type_name = _TYPE_NAMES.get(int(tensor.type))
    if held == 0 or getattr(tensor, "sparsity", None) is not None or type_name is None or type_name in PACKED_TYPES:
        return
    shape = ints(tensor.shape)
    count = 1
    for dim in shape:
        count *= dim
    needed = max(count, 0) * _NP_DTYPES[type_name].itemsize
    if held != needed or any(d < 0 for d in shape):
        raise ModelError(
            f"{origin} is corrupt: tensor {t} ('{text(tensor.name)}') of subgraph {s} has shape "
            f"{list(shape)} of {type_name} ({needed} bytes), but its constant data is {held} bytes"
        )

def _check_absent_inputs(m: Any, origin: str, s: int, o: int, op: Any, tensors: Sequence[Any]) -> None:
    """Refuse an operator whose kernel would read an input the model leaves absent.

    Raises:
        ModelError: a required input is -1, or a quantized convolution has no bias.
    """
    name, builtin, _ = opcode_of(m.operatorCodes[op.opcodeIndex])
    optional = _OPTIONAL_INPUTS.get(name) if builtin else None
    if optional is None:
        return
    inputs = ints(op.inputs)
    where = f"{origin} is corrupt: operator {o} ({name}) of subgraph {s}"
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
