"""Predict what edgetpu_compiler maps to the Edge TPU, and why the rest stays on the CPU.

Two steps. Each operator is judged on its own against the rule table
(``rules.RULES``). Then the graph is partitioned in data-flow order: an op
is mapped only if it is supported and none of its inputs depends on an op that
is not mapped, because the compiler emits a single ``edgetpu-custom-op`` and
cannot go back to the Edge TPU after the CPU. Ops that only convert model
inputs or outputs (``conversions.py``) are the exception: they run on the CPU
around the Edge TPU without cutting the graph.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional, Union


from ...errors import ModelError
from ..tflite import EDGETPU_CUSTOM_OP, TfliteModel
from .context import tensor_label
from .conversions import Found, find_conversions
from .graph import Graph
from .judge import judge
from .report import MAPPED, CompatibilityReport, CompiledSplit, Failure, OperatorEntry
from .rules import DEFAULT_RUNTIME, NEWEST_DOCUMENTED_RUNTIME, RULES, UNSPECIFIED, RuleTable

Source = Union[str, Path, bytes, bytearray, memoryview, TfliteModel]

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
    graph = Graph(model, runtime_version, rules)
    if model.is_edgetpu_compiled:
        report = _compiled_report(graph, path)
    else:
        report = _predicted_report(graph, path)
    report.subgraphs = model.subgraph_count
    report.warnings[:0] = _model_warnings(graph)
    return report


def _predicted_report(graph: Graph, path: Optional[str]) -> CompatibilityReport:
    """Judge every op, then partition in data-flow order."""
    entries: list[OperatorEntry] = []
    available: set[int] = set()  # ops whose outputs the Edge TPU may consume
    root: dict[int, int] = {}  # unmapped op -> the first unmappable op upstream
    warnings: list[str] = []
    boundaries: list[OperatorEntry] = []
    cut: Optional[OperatorEntry] = None
    conversions = find_conversions(graph)
    for op in graph.ops:
        if op.index in conversions:
            entry = _conversion_entry(op, conversions[op.index])
            available.add(op.index)
            entries.append(entry)
            boundaries.append(entry)
            continue
        verdict = judge(graph, op)
        blocker = _blocking_input(graph, op, available)
        if verdict.failures:
            first = verdict.failures[0]
            entry = OperatorEntry(op.index, op.opcode, "cpu", first.reason, first.rule,
                                  first.status, verdict.failures,
                                  evidence=verdict.placement_evidence, uncertain=verdict.uncertain)
            root[op.index] = op.index
        elif blocker is not None:
            entry = _after_cut(graph, op, blocker, root, entries)
        else:
            entry = OperatorEntry(op.index, op.opcode, "tpu", evidence=verdict.placement_evidence,
                                  uncertain=verdict.uncertain)
            available.add(op.index)
            warnings.extend(verdict.advisories)
        if entry.target == "cpu" and cut is None:
            cut = entry
        entries.append(entry)
    if boundaries:
        warnings.insert(0, _float_io_warning(boundaries))
    core = [e for e in entries if not e.boundary]
    if core and all(e.target == "tpu" for e in core):
        verdict_name = "full"
    elif any(e.target == "tpu" for e in core):
        verdict_name = "partial"
    else:
        verdict_name = "none"
    return CompatibilityReport(
        model=path, runtime_version=graph.runtime, verdict=verdict_name, operators=entries,
        cut_point=cut, warnings=warnings, notes=_notes(graph),
    )


def _conversion_entry(op: Any, found: Found) -> OperatorEntry:
    """An I/O conversion op: on the CPU, outside the Edge TPU region, with the compiler's log line."""
    return OperatorEntry(op.index, op.opcode, "cpu", found.reason, found.rule.id, BOUNDARY,
                         boundary=True, log_status=found.rule.status, evidence=found.rule.evidence)


def _after_cut(graph: Graph, op: Any, blocker: tuple[Any, int], root: dict[int, int],
               entries: list[OperatorEntry]) -> OperatorEntry:
    """A supported op that reads an unmapped op's output: it runs on the CPU after the cut."""
    tensor, producer = blocker
    origin = root.get(producer, producer)
    upstream = "" if origin == producer else f", downstream of op {origin} ({graph.names[origin]})"
    reason = (
        f"supported, but runs on the CPU after the cut: its input {tensor_label(tensor)} "
        f"comes from op {producer} ({graph.names[producer]}){upstream}, which is not "
        f"mapped (rule: {CUT_RULE_TEXT})"
    )
    root[op.index] = origin
    uncertain = None
    if entries[origin].uncertain:
        uncertain = (f"on the CPU because op {origin} ({graph.names[origin]}) upstream is, and that "
                     "op is placed by an undocumented threshold: the prediction may differ")
    return OperatorEntry(op.index, op.opcode, "cpu", reason, "cut", AFTER_CUT, uncertain=uncertain)


def _blocking_input(graph: Graph, op: Any, available: set[int]) -> Optional[tuple[Any, int]]:
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


def _notes(graph: Graph) -> list[dict[str, Any]]:
    return [{"key": n.key, "text": n.text, "ops": list(n.ops)} for n in graph.notes.values()]


def _model_warnings(graph: Graph) -> list[str]:
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
def _compiled_report(graph: Graph, path: Optional[str]) -> CompatibilityReport:
    """Report what edgetpu_compiler did: custom ops on the Edge TPU, the rest left on the CPU."""
    entries: list[OperatorEntry] = []
    custom: list[int] = []
    cpu: list[OperatorEntry] = []
    conversions = find_conversions(graph)
    for op in graph.ops:
        if op.opcode == EDGETPU_CUSTOM_OP:
            entries.append(OperatorEntry(op.index, op.opcode, "tpu", status=MAPPED + " (compiled)"))
            custom.append(op.index)
            continue
        if op.index in conversions:
            entry = _conversion_entry(op, conversions[op.index])
        else:
            failures = judge(graph, op).failures
            reason = "left on the CPU by edgetpu_compiler"
            if failures:
                reason += f"; the rules say: {failures[0].reason}"
            entry = OperatorEntry(op.index, op.opcode, "cpu", reason, "compiled", LEFT_ON_CPU, failures,
                                  log_status=_logged_status(graph, op, failures, conversions))
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


def _logged_status(graph: Graph, op: Any, failures: list[Failure], conversions: dict[int, Found]) -> str:
    """The status the compiler most likely logged for an op it left on the CPU.

    The compiled file does not keep the log, so it is rebuilt: a broken rule's
    own status; else "after the cut" when an input comes from another CPU op
    that is not a conversion; else the compiler's catch-all.
    """
    if failures:
        return failures[0].status
    for t in op.inputs:
        producer = graph.producers.get(t) if t >= 0 else None
        if (producer is not None and graph.names[producer] != EDGETPU_CUSTOM_OP
                and producer not in conversions):
            return AFTER_CUT
    return UNSPECIFIED


def cpu_twin_path(path: Path) -> Optional[Path]:
    """``X_edgetpu.tflite`` -> ``X.tflite`` beside it, when that file exists."""
    name = path.name
    if not name.endswith("_edgetpu.tflite"):
        return None
    twin = path.with_name(name[: -len("_edgetpu.tflite")] + ".tflite")
    return twin if twin.is_file() else None


def _attach_twin(split: CompiledSplit, graph: Graph, path: Path, warnings: list[str]) -> None:
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
