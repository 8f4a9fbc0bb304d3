"""Edge TPU compatibility checker: predict what edgetpu_compiler maps, and explain the rest.

``check_model(path_or_bytes_or_model, runtime_version=14)`` returns a
``CompatibilityReport``; ``report.to_dict()`` is the ``check`` JSON contract.
The rules live in one table, ``rules.RULES``.
"""
from __future__ import annotations

from .check import check_model, cpu_twin_path
from .report import (
    EXIT_BAD_INPUT,
    EXIT_FULL,
    EXIT_NONE,
    EXIT_PARTIAL,
    CompatibilityReport,
    CompiledSplit,
    Failure,
    OperatorEntry,
)
from .rules import DEFAULT_RUNTIME, RULES, Limitation, OpRule, RuleTable

__all__ = [
    "check_model", "cpu_twin_path", "CompatibilityReport", "CompiledSplit", "Failure",
    "OperatorEntry", "RULES", "RuleTable", "OpRule", "Limitation", "DEFAULT_RUNTIME",
    "EXIT_FULL", "EXIT_PARTIAL", "EXIT_NONE", "EXIT_BAD_INPUT",
]
