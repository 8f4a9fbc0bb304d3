"""Find the ops that only convert model inputs or outputs, which run on the CPU without a cut.

The compiler leaves such ops outside the ``edgetpu-custom-op`` and maps what
lies between them, so the partitioner must not treat them as the cut point.
Documented: a QUANTIZE of a float model input and a DEQUANTIZE to a float model
output. Observed (edgetpu_compiler 16, MoveNet): CASTs of an 8-bit model input
to float that feed only that QUANTIZE. Nothing wider: a CAST anywhere else is an
unsupported op and cuts the graph.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

from .context import EIGHT_BIT, tensor_label
from .graph import Graph
from .rules import Conversion


@dataclass(frozen=True)
class Found:
    """One conversion op: the rule that allows it and the sentence for the report."""

    rule: Conversion
    reason: str


def find_conversions(graph: Graph) -> dict[int, Found]:
    """Op index -> the conversion rule it falls under, for every I/O conversion op of the graph."""
    found = _input_prefix(graph)
    for op in graph.ops:
        why = _output_dequantize(graph, op)
        if why is not None:
            found[op.index] = Found(graph.rules.conversion("float-io", "DEQUANTIZE"), why)
    return found


def _io(graph: Graph, op: Any) -> tuple[Any, Any]:
    return graph.tensors[op.inputs[0]], graph.tensors[op.outputs[0]]


def _input_prefix(graph: Graph) -> dict[int, Found]:
    """The leading CAST/QUANTIZE ops that only turn a model input into the 8-bit input of the Edge TPU."""
    casts: set[int] = set()
    quantizes: dict[int, bool] = {}  # QUANTIZE op -> whether it follows casts
    for op in graph.ops:
        if len(op.inputs) < 1 or len(op.outputs) != 1 or op.inputs[0] < 0:
            continue
        src, dst = _io(graph, op)
        producer = graph.producers.get(op.inputs[0])
        from_input = producer is None  # a model input (or a float constant: no op to wait for)
        after_cast = producer in casts
        cast_source_ok = after_cast or (from_input and src.dtype in EIGHT_BIT)  # MoveNet: uint8
        if op.opcode == "CAST" and dst.dtype.kind == "f" and cast_source_ok:
            casts.add(op.index)
        elif (op.opcode == "QUANTIZE" and src.dtype.kind == "f" and dst.dtype in EIGHT_BIT
              and (from_input or after_cast)):
            quantizes[op.index] = after_cast
    # A cast stays in the prefix only if everything that reads it is in the prefix too.
    changed = True
    while changed:
        changed = False
        for i in sorted(casts):
            readers = graph.op_consumers(graph.ops[i])
            exported = graph.ops[i].outputs[0] in graph.outputs
            if exported or not readers or not readers <= casts | set(quantizes):
                casts.discard(i)
                changed = True
        for i, after_cast in list(quantizes.items()):
            if after_cast and graph.producers.get(graph.ops[i].inputs[0]) not in casts:
                del quantizes[i]
                changed = True
    found: dict[int, Found] = {}
    for i in sorted(casts):
        src, dst = _io(graph, graph.ops[i])
        found[i] = Found(graph.rules.conversion("input-cast", "CAST"), (
            f"casts the model input {tensor_label(src)} ({src.dtype.name}) to {dst.dtype.name} on "
            "the CPU before the Edge TPU; it only feeds the input quantize, so it does not cut "
            "the graph"
        ))
    for i, after_cast in quantizes.items():
        src, _ = _io(graph, graph.ops[i])
        if after_cast:
            found[i] = Found(graph.rules.conversion("input-cast", "QUANTIZE"), (
                f"quantizes the cast model input {tensor_label(src)} on the CPU before the Edge TPU "
                "(the input conversion ends here; what follows is mapped)"
            ))
        else:
            found[i] = Found(graph.rules.conversion("float-io", "QUANTIZE"), (
                f"quantizes the float model input {tensor_label(src)} on the CPU before the "
                "Edge TPU (allowed: float inputs are converted at the start)"
            ))
    return found


def _output_dequantize(graph: Graph, op: Any) -> Optional[str]:
    """Why ``op`` is a DEQUANTIZE of a model output to float, or None."""
    if op.opcode != "DEQUANTIZE" or not op.inputs or not op.outputs:
        return None
    src, dst = _io(graph, op)
    out = op.outputs[0]
    if src.dtype in EIGHT_BIT and dst.dtype.kind == "f" and out in graph.outputs and not graph.consumers.get(out):
        return (
            f"dequantizes the model output {tensor_label(dst)} to float on the CPU after "
            "the Edge TPU (allowed: float outputs are converted at the end)"
        )
    return None
