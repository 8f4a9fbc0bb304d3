"""Judge one operator on its own against the rule table, before any partitioning."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from .graph import Graph
from .report import Failure
from .rules import DOCUMENTED, NOT_SUPPORTED, Evidence


@dataclass
class Judgement:
    """What the rules say about one op: why it cannot be mapped, and what is only a warning.

    ``doubts`` are the advisories of threshold rules: the op is predicted mapped
    by a number no document gives.
    """

    failures: list[Failure] = field(default_factory=list)
    advisories: list[str] = field(default_factory=list)
    doubts: list[str] = field(default_factory=list)
    evidence: Evidence = DOCUMENTED

    @property
    def uncertain(self) -> Optional[str]:
        """Why the placement rests on an undocumented threshold, or None."""
        if self.failures:
            if all(f.threshold for f in self.failures):
                return self.failures[0].reason
            return None
        return self.doubts[0] if self.doubts else None

    @property
    def placement_evidence(self) -> Evidence:
        """The evidence the op's placement rests on: documented unless only observed rules decide it."""
        if not self.failures:
            return self.evidence
        if any(not f.evidence.observed for f in self.failures):
            return DOCUMENTED
        return self.failures[0].evidence


def judge(graph: Graph, op: Any) -> Judgement:
    """Check one operator on its own against the rule table."""
    if not op.builtin:
        return Judgement([Failure(
            "supported-ops",
            f"custom op '{op.opcode}' has no Edge TPU kernel: only builtin operations are mapped",
            NOT_SUPPORTED,
        )])
    rule = graph.rules.rule_for(op.opcode)
    if rule is None:
        if op.opcode.startswith("UNKNOWN_"):
            detail = (f"builtin operator code {op.opcode[8:]} is unknown to this checker's schema "
                      "(newer than it); it is not in the Edge TPU's list of operations")
        else:
            detail = f"{op.opcode} is not in the Edge TPU's list of supported operations"
        return Judgement([Failure("supported-ops", detail, NOT_SUPPORTED)])
    if graph.runtime < rule.min_runtime:
        return Judgement([Failure(
            "runtime-version",
            f"{rule.title} needs Edge TPU runtime {rule.min_runtime} or newer; checking for "
            f"runtime {graph.runtime} (--runtime-version)",
            f"Operation not supported by runtime version {graph.runtime}",
            rule.evidence,
        )])
    ctx = graph.context(op, rule)
    result = Judgement(evidence=rule.evidence)
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
            result.advisories.append(f"op {op.index} ({op.opcode}): {detail}")
            if lim.threshold:
                result.doubts.append(detail)
        else:
            result.failures.append(Failure(rule_id, f"{detail} (rule: {lim.text})", lim.status,
                                           lim.evidence, lim.threshold))
    if not result.failures:
        graph.keep_notes(ctx)
    return result
