"""The compatibility report: what the checker found, as data and as the ``check`` JSON contract."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from .rules import DOCUMENTED, Evidence

MAPPED = "Mapped to Edge TPU"

EXIT_FULL = 0
EXIT_PARTIAL = 2
EXIT_NONE = 3
EXIT_BAD_INPUT = 4

_EXIT_CODES = {"full": EXIT_FULL, "partial": EXIT_PARTIAL, "none": EXIT_NONE}


@dataclass(frozen=True)
class Failure:
    """One broken rule: the rule's id, the sentence for the user, and a compiler-style status."""

    rule: str
    reason: str
    status: str
    evidence: Evidence = DOCUMENTED
    threshold: bool = False  # the rule is a number no document gives

    def to_dict(self) -> dict[str, str]:
        return {"rule": self.rule, "reason": self.reason}


@dataclass
class OperatorEntry:
    """One operator in execution order and where it runs."""

    index: int
    op: str
    target: str  # "tpu" | "cpu"
    reason: Optional[str] = None
    rule: Optional[str] = None
    status: str = MAPPED
    failures: list[Failure] = field(default_factory=list)
    boundary: bool = False  # an input/output conversion the rules allow on the CPU
    log_status: Optional[str] = None  # the line edgetpu_compiler logs; None: same as status
    evidence: Evidence = DOCUMENTED  # the rule this placement rests on
    uncertain: Optional[str] = None  # why the placement rests on an undocumented threshold

    @property
    def compiler_status(self) -> str:
        """The status in the compiler's own log vocabulary, to compare with ``edgetpu_compiler -s``."""
        return self.log_status or self.status

    def to_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "op": self.op,
            "target": self.target,
            "reason": self.reason,
            "rule": self.rule,
            "status": self.status,
            "compiler_status": self.compiler_status,
            "boundary": self.boundary,
            "basis": self.evidence.to_dict(),
            "uncertain": self.uncertain,
            "failures": [f.to_dict() for f in self.failures],
        }


@dataclass
class CompiledSplit:
    """What edgetpu_compiler actually did with an already-compiled model."""

    edgetpu_ops: list[int]
    cpu_ops: list[OperatorEntry]
    twin: Optional[str] = None
    ops_inside: Optional[dict[str, int]] = None  # op type -> count, when the CPU twin is known

    def to_dict(self) -> dict[str, Any]:
        return {
            "edgetpu_custom_ops": self.edgetpu_ops,
            "cpu_ops": [{"index": e.index, "op": e.op} for e in self.cpu_ops],
            "cpu_twin": self.twin,
            "ops_inside": self.ops_inside,
            "ops_inside_count": sum(self.ops_inside.values()) if self.ops_inside is not None else None,
        }


@dataclass
class CompatibilityReport:
    """The verdict on one model for one Edge TPU runtime version."""

    model: Optional[str]
    runtime_version: int
    verdict: str  # "full" | "partial" | "none"
    operators: list[OperatorEntry]
    cut_point: Optional[OperatorEntry] = None
    warnings: list[str] = field(default_factory=list)
    notes: list[dict[str, Any]] = field(default_factory=list)
    compiled: Optional[CompiledSplit] = None
    subgraphs: int = 1

    @property
    def tpu_ops(self) -> int:
        return sum(1 for e in self.operators if e.target == "tpu")

    @property
    def cpu_ops(self) -> int:
        return sum(1 for e in self.operators if e.target == "cpu")

    @property
    def exit_code(self) -> int:
        """0 fully mapped, 2 partially, 3 not at all (4 is the CLI's code for unreadable input)."""
        return _EXIT_CODES[self.verdict]

    def cpu_op_names(self) -> list[str]:
        """The op types predicted (or, for a compiled model, left) on the CPU, in execution order."""
        return [e.op for e in self.operators if e.target == "cpu"]

    def op_types(self) -> list[dict[str, Any]]:
        """Rows like the compiler log's ``Operator / Count / Status`` table, in first-seen order."""
        return _count_rows((e.op, e.status) for e in self.operators)

    def compiler_log(self) -> dict[str, Any]:
        """The summary ``edgetpu_compiler -s`` prints, in its words, to compare line by line.

        For a compiled model with its CPU twin, the ops inside the custom op are
        the twin's ops, each "Mapped to Edge TPU", as the compiler logged them.
        """
        pairs: list[tuple[str, str]] = []
        inside = self.compiled.ops_inside if self.compiled is not None else None
        for e in self.operators:
            if e.target == "tpu" and inside is not None:
                continue
            pairs.append((e.op, e.compiler_status if e.target == "cpu" else MAPPED))
        if inside:
            pairs[:0] = [(op, MAPPED) for op, n in inside.items() for _ in range(n)]
        return {
            "edgetpu_ops": sum(1 for _, status in pairs if status == MAPPED),
            "cpu_ops": sum(1 for _, status in pairs if status != MAPPED),
            "operators": _count_rows(pairs),
        }

    def observed_rules(self) -> list[dict[str, Any]]:
        """Every undocumented, observed compiler behaviour this report relies on, with its ops."""
        rules: dict[tuple[str, str], dict[str, Any]] = {}
        for e in self.operators:
            if not e.evidence.observed:
                continue
            rule = e.rule or f"mapped:{e.op}"
            row = rules.setdefault((rule, e.evidence.seen_in), {
                "rule": rule, "text": e.evidence.describe(), **e.evidence.to_dict(), "ops": [],
            })
            row["ops"].append(e.index)
        return list(rules.values())

    def uncertain_ops(self) -> list[dict[str, Any]]:
        """Ops placed by a threshold no document gives: the compiler may place them otherwise."""
        return [{"index": e.index, "op": e.op, "target": e.target, "text": e.uncertain}
                for e in self.operators if e.uncertain]

    def to_dict(self) -> dict[str, Any]:
        """The ``check`` JSON document of DESIGN.md, plus the details behind it."""
        cut = self.cut_point
        return {
            "model": self.model,
            "verdict": self.verdict,
            "runtime_version": self.runtime_version,
            "operators": [e.to_dict() for e in self.operators],
            "summary": {
                "tpu_ops": self.tpu_ops,
                "cpu_ops": self.cpu_ops,
                "total_ops": len(self.operators),
                "boundary_ops": sum(1 for e in self.operators if e.boundary),
            },
            "cut_point": None if cut is None else {
                "index": cut.index, "op": cut.op, "rule": cut.rule, "reason": cut.reason,
            },
            "op_types": self.op_types(),
            "compiler_log": self.compiler_log(),
            "observed_rules": self.observed_rules(),
            "uncertain": self.uncertain_ops(),
            "warnings": list(self.warnings),
            "notes": [dict(n) for n in self.notes],
            "compiled": self.compiled.to_dict() if self.compiled is not None else None,
            "subgraphs": self.subgraphs,
        }


def _count_rows(pairs: Any) -> list[dict[str, Any]]:
    """(operator, status) pairs counted into rows in first-seen order, as the compiler's table."""
    rows: dict[tuple[str, str], dict[str, Any]] = {}
    for op, status in pairs:
        if (op, status) not in rows:
            rows[(op, status)] = {"operator": op, "count": 0, "status": status}
        rows[(op, status)]["count"] += 1
    return list(rows.values())
