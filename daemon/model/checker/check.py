"""Predict what edgetpu_compiler maps to the Edge TPU, and why the rest stays on the CPU.

Two steps. Each operator is judged on its own against the rule table
(``rules.RULES``). Then the graph is partitioned in data-flow order: an op
is mapped only if it is supported and none of its inputs depends on an op that
is not mapped, because the compiler emits a single ``edgetpu-custom-op`` and
cannot go back to the Edge TPU after the CPU. A float quantize at the start and
a dequantize at the end are the exception Coral documents: they run on the CPU
around the Edge TPU without cutting the graph.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional, Union

import numpy as np

from ...errors import ModelError
from ..tflite import EDGETPU_CUSTOM_OP, TfliteModel
from .context import EIGHT_BIT, Note, OpContext, tensor_label
from .report import MAPPED, CompatibilityReport, CompiledSplit, Failure, OperatorEntry
from .rules import DEFAULT_RUNTIME, NEWEST_DOCUMENTED_RUNTIME, RULES, OpRule, RuleTable

Source = Union[str, Path, bytes, bytearray, memoryview, TfliteModel]

NOT_SUPPORTED = "Operation not supported"
AFTER_CUT = "More than one subgraph is not supported"
BOUNDARY = "Runs on the CPU: float input/output conversion"
LEFT_ON_CPU = "Left on the CPU by edgetpu_compiler"
CUT_RULE_TEXT = (
    "at the first operator that cannot be mapped the graph is cut; everything that depends "
    "on it runs on the CPU"
)


def check_model(
    source: Source,
    runtime_version: int = DEFAULT_RUNTIME,
    *,
    rules: RuleTable = RULES,
) -> CompatibilityReport:
    """Check a model (path, bytes or ``TfliteModel``) against the Edge TPU rules.

    An already-compiled model is reported as the compiler left it: the
    ``edgetpu-custom-op`` on the Edge TPU and every other op on the CPU.

    Raises:
        ModelError: the model cannot be read (not a tflite, corrupt, no subgraphs).
        ValueError: ``runtime_version`` is not a positive integer.
    """
    if isinstance(runtime_version, bool) or not isinstance(runtime_version, int) or runtime_version < 1:
        raise ValueError(f"runtime version must be a positive integer, got {runtime_version!r}")
    path = str(source) if isinstance(source, (str, Path)) else None
    model = source if isinstance(source, TfliteModel) else TfliteModel.read(source)
    if model.subgraph_count == 0:
        raise ModelError("the model has no subgraphs: there is nothing to check")
    graph = _Graph(model, runtime_version, rules)
    if model.is_edgetpu_compiled:
        report = _compiled_report(graph, path)
    else:
        report = _predicted_report(graph, path)
    report.subgraphs = model.subgraph_count
    report.warnings[:0] = _model_warnings(graph)
    return report


class _Graph:
    """Subgraph 0 with the lookups the rules and the partitioner need."""

    def __init__(self, model: TfliteModel, runtime: int, rules: RuleTable) -> None:
        self.model = model
        self.runtime = runtime
        self.rules = rules
        self.ops = model.operators(0)
        self.tensors = model.tensors(0)
        self.inputs = frozenset(model.input_indices(0))
        self.outputs = frozenset(model.output_indices(0))
        self.producers: dict[int, int] = {}
        self.consumers: dict[int, list[int]] = {}
        for op in self.ops:
            for t in op.outputs:
                if t >= 0:
                    self.producers.setdefault(t, op.index)
            for t in op.inputs:
                if t >= 0:
                    self.consumers.setdefault(t, []).append(op.index)
        self.names = [op.opcode for op in self.ops]
        self.notes: dict[str, Note] = {}

    def values(self, tensor: Any) -> Optional[np.ndarray]:
        try:
            return self.model.tensor_data(tensor.index)
        except ModelError:
            return None

    def context(self, op: Any, rule: Optional[OpRule]) -> OpContext:
        return OpContext(
            index=op.index, op=op.opcode, builtin=op.builtin, inputs=list(op.inputs),
            outputs=list(op.outputs), options=op.options, tensors=self.tensors,
            runtime=self.runtime, producers=self.producers, op_names=self.names,
            graph_inputs=self.inputs, tensor_values=self.values, rule=rule,
        )

    def keep_notes(self, ctx: OpContext) -> None:
        for note in ctx.notes:
            kept = self.notes.setdefault(note.key, Note(note.key, note.text, []))
            kept.ops.extend(i for i in note.ops if i not in kept.ops)

    def boundary(self, op: Any) -> Optional[str]:
        """Why ``op`` is a float-I/O conversion the rules allow on the CPU, or None."""
        if op.opcode == "QUANTIZE" and op.inputs and op.outputs:
            src, dst = self.tensors[op.inputs[0]], self.tensors[op.outputs[0]]
            if src.dtype.kind == "f" and dst.dtype in EIGHT_BIT and op.inputs[0] not in self.producers:
                return (
                    f"quantizes the float model input {tensor_label(src)} on the CPU before the "
                    "Edge TPU (allowed: float inputs are converted at the start)"
                )
        if op.opcode == "DEQUANTIZE" and op.inputs and op.outputs:
            src, dst = self.tensors[op.inputs[0]], self.tensors[op.outputs[0]]
            out = op.outputs[0]
            if (src.dtype in EIGHT_BIT and dst.dtype.kind == "f" and out in self.outputs
                    and not self.consumers.get(out)):
                return (
                    f"dequantizes the model output {tensor_label(dst)} to float on the CPU after "
                    "the Edge TPU (allowed: float outputs are converted at the end)"
                )
        return None


def judge(graph: _Graph, op: Any) -> tuple[list[Failure], list[str]]:
    """Check one operator on its own: (failures that keep it off the Edge TPU, advisory warnings)."""
    if not op.builtin:
        return [Failure(
            "supported-ops",
            f"custom op '{op.opcode}' has no Edge TPU kernel: only builtin operations are mapped",
            NOT_SUPPORTED,
        )], []
    rule = graph.rules.rule_for(op.opcode)
    if rule is None:
        if op.opcode.startswith("UNKNOWN_"):
            detail = (f"builtin operator code {op.opcode[8:]} is unknown to this checker's schema "
                      "(newer than it); it is not in the Edge TPU's list of operations")
        else:
            detail = f"{op.opcode} is not in the Edge TPU's list of supported operations"
        return [Failure("supported-ops", detail, NOT_SUPPORTED)], []
    if graph.runtime < rule.min_runtime:
        return [Failure(
            "runtime-version",
            f"{rule.title} needs Edge TPU runtime {rule.min_runtime} or newer; checking for "
            f"runtime {graph.runtime} (--runtime-version)",
            f"Operation not supported by runtime version {graph.runtime}",
        )], []
    ctx = graph.context(op, rule)
    failures: list[Failure] = []
    advisories: list[str] = []
    for lim, rule_id in [(x, f"{rule.title}.{x.name}") for x in rule.limitations] + [
        (x, x.name) for x in graph.rules.general
    ]:
        if not lim.applies(graph.runtime):
            continue
        try:
            detail = lim.check(ctx)
        except Exception as exc:  # a malformed op must give a report, not a traceback
            detail = f"cannot evaluate this limitation on the op's tensors ({type(exc).__name__}: {exc})"
        if detail is None:
            continue
        if lim.advisory:
            advisories.append(f"op {op.index} ({op.opcode}): {detail}")
        else:
            failures.append(Failure(rule_id, f"{detail} (rule: {lim.text})", lim.status))
    if not failures:
        graph.keep_notes(ctx)
    return failures, advisories


def _predicted_report(graph: _Graph, path: Optional[str]) -> CompatibilityReport:
    """Judge every op, then partition in data-flow order."""
    entries: list[OperatorEntry] = []
    mapped: set[int] = set()
    available: set[int] = set()  # ops whose outputs the Edge TPU may consume
    root: dict[int, int] = {}  # unmapped op -> the first unmappable op upstream
    warnings: list[str] = []
    boundaries: list[OperatorEntry] = []
    cut: Optional[OperatorEntry] = None
    for op in graph.ops:
        why = graph.boundary(op)
        if why is not None:
            entry = OperatorEntry(op.index, op.opcode, "cpu", why, "float-io", BOUNDARY, boundary=True)
            available.add(op.index)
            entries.append(entry)
            boundaries.append(entry)
            continue
        failures, advisories = judge(graph, op)
        blocker = _blocking_input(graph, op, available)
        if failures:
            first = failures[0]
            entry = OperatorEntry(op.index, op.opcode, "cpu", first.reason, first.rule,
                                  first.status, failures)
            root[op.index] = op.index
        elif blocker is not None:
            tensor, producer = blocker
            origin = root.get(producer, producer)
            upstream = "" if origin == producer else (
                f", downstream of op {origin} ({graph.names[origin]})"
            )
            reason = (
                f"supported, but runs on the CPU after the cut: its input {tensor_label(tensor)} "
                f"comes from op {producer} ({graph.names[producer]}){upstream}, which is not "
                f"mapped (rule: {CUT_RULE_TEXT})"
            )
            entry = OperatorEntry(op.index, op.opcode, "cpu", reason, "cut", AFTER_CUT)
            root[op.index] = origin
        else:
            entry = OperatorEntry(op.index, op.opcode, "tpu")
            mapped.add(op.index)
            available.add(op.index)
            warnings.extend(advisories)
        if entry.target == "cpu" and cut is None:
            cut = entry
        entries.append(entry)
    if boundaries:
        warnings.insert(0, _float_io_warning(boundaries))
    core = [e for e in entries if not e.boundary]
    if core and all(e.target == "tpu" for e in core):
        verdict = "full"
    elif any(e.target == "tpu" for e in core):
        verdict = "partial"
    else:
        verdict = "none"
    return CompatibilityReport(
        model=path, runtime_version=graph.runtime, verdict=verdict, operators=entries,
        cut_point=cut, warnings=warnings, notes=_notes(graph),
    )


def _blocking_input(graph: _Graph, op: Any, available: set[int]) -> Optional[tuple[Any, int]]:
    """The first input computed by an op the Edge TPU cannot consume from, with that op."""
    for t in op.inputs:
        if t < 0:
            continue
        producer = graph.producers.get(t)
        if producer is not None and producer not in available:
            return graph.tensors[t], producer
    return None


def _float_io_warning(boundaries: list[OperatorEntry]) -> str:
    ops = ", ".join(f"op {e.index} ({e.op})" for e in boundaries)
    return (
        f"float I/O adds a CPU quantize/dequantize: {ops} run on the CPU around the Edge TPU; "
        "give the model int8/uint8 inputs and outputs to avoid the conversion"
    )


def _notes(graph: _Graph) -> list[dict[str, Any]]:
    return [{"key": n.key, "text": n.text, "ops": list(n.ops)} for n in graph.notes.values()]


def _model_warnings(graph: _Graph) -> list[str]:
    model, runtime = graph.model, graph.runtime
    warnings = []
    if model.subgraph_count > 1:
        warnings.append(
            f"the model has {model.subgraph_count} subgraphs; only subgraph 0 (the one the "
            "interpreter runs) is checked, and the others (control-flow bodies) run on the CPU"
        )
    if runtime > NEWEST_DOCUMENTED_RUNTIME:
        warnings.append(
            f"runtime {runtime} is newer than the rules Coral documents (up to "
            f"{NEWEST_DOCUMENTED_RUNTIME}); it was checked with those rules"
        )
    if not graph.ops:
        warnings.append("the model has no operators: there is nothing to map")
    return warnings


# --------------------------------------------------------------------- compiled models
def _compiled_report(graph: _Graph, path: Optional[str]) -> CompatibilityReport:
    """Report what edgetpu_compiler did: custom ops on the Edge TPU, the rest left on the CPU."""
    entries: list[OperatorEntry] = []
    custom: list[int] = []
    cpu: list[OperatorEntry] = []
    for op in graph.ops:
        if op.opcode == EDGETPU_CUSTOM_OP:
            entries.append(OperatorEntry(op.index, op.opcode, "tpu", status=MAPPED + " (compiled)"))
            custom.append(op.index)
            continue
        why = graph.boundary(op)
        if why is not None:
            entry = OperatorEntry(op.index, op.opcode, "cpu", why, "float-io", BOUNDARY, boundary=True)
        else:
            failures, _ = judge(graph, op)
            reason = "left on the CPU by edgetpu_compiler"
            if failures:
                reason += f"; the rules say: {failures[0].reason}"
            entry = OperatorEntry(op.index, op.opcode, "cpu", reason, "compiled", LEFT_ON_CPU, failures)
        entries.append(entry)
        cpu.append(entry)
    split = CompiledSplit(edgetpu_ops=custom, cpu_ops=cpu)
    warnings: list[str] = []
    if path is not None:
        _attach_twin(split, graph, Path(path), warnings)
    core_cpu = [e for e in cpu if not e.boundary]
    verdict = "partial" if core_cpu else "full"
    cut = core_cpu[0] if core_cpu else None
    warnings.insert(0, (
        f"already compiled: {len(custom)} edgetpu-custom-op(s) run on the Edge TPU and "
        f"{len(cpu)} op(s) were left on the CPU; this is what the compiler did, not a prediction"
    ))
    return CompatibilityReport(
        model=path, runtime_version=graph.runtime, verdict=verdict, operators=entries,
        cut_point=cut, warnings=warnings, notes=_notes(graph), compiled=split,
    )


def cpu_twin_path(path: Path) -> Optional[Path]:
    """``X_edgetpu.tflite`` -> ``X.tflite`` beside it, when that file exists."""
    name = path.name
    if not name.endswith("_edgetpu.tflite"):
        return None
    twin = path.with_name(name[: -len("_edgetpu.tflite")] + ".tflite")
    return twin if twin.is_file() else None


def _attach_twin(split: CompiledSplit, graph: _Graph, path: Path, warnings: list[str]) -> None:
    """Name the ops inside the custom op(s) from the CPU twin: its ops the compiled file does not keep."""
    twin_path = cpu_twin_path(path)
    if twin_path is None:
        return
    try:
        twin = TfliteModel.read(twin_path)
        twin_ops, twin_tensors = twin.operators(0), twin.tensors(0)
    except ModelError as exc:
        warnings.append(f"the CPU twin {twin_path} is unreadable: {exc}")
        return
    kept = {graph.tensors[t].name for e in split.cpu_ops for t in graph.ops[e.index].outputs if t >= 0}
    inside: dict[str, int] = {}
    for op in twin_ops:
        names = {twin_tensors[t].name for t in op.outputs if t >= 0}
        if names and names <= kept:
            continue
        inside[op.opcode] = inside.get(op.opcode, 0) + 1
    split.twin = str(twin_path)
    split.ops_inside = inside
