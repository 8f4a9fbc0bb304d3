"""``edgetpuctl check MODEL.tflite``: the offline Edge TPU compatibility check.

It needs no daemon: the model is read and judged in this process. Exit codes
let scripts branch on the verdict: 0 fully mapped, 2 partially, 3 not at all,
4 unreadable or bad input (the error goes to stderr, never a traceback).
"""
from __future__ import annotations

import argparse
import json
import sys
import types
from typing import Any, Optional, Sequence, TextIO

from ..errors import ModelError
from ..model.checker import (
    DEFAULT_RUNTIME,
    EXIT_BAD_INPUT,
    CompatibilityReport,
    check_model,
)
from .argtypes import int_at_least

COMMAND = "check"
HELP = "predict which ops of a .tflite model the Edge TPU runs (offline, no daemon needed)"
_VERDICTS = {
    "full": "fully mapped: every operator runs on the Edge TPU",
    "partial": "partially mapped: the graph is cut and the rest runs on the CPU",
    "none": "not mapped: nothing runs on the Edge TPU",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The command's own arguments (shared by the edgetpuctl subcommand and ``main``)."""
    parser.add_argument("model", metavar="MODEL.tflite", help="the model to check (CPU twin or compiled)")
    parser.add_argument(
        "--runtime-version", type=int_at_least(1), default=DEFAULT_RUNTIME, metavar="N",
        help=f"Edge TPU runtime version to check for (default {DEFAULT_RUNTIME})",
    )
    # SUPPRESS keeps a global `edgetpuctl --json` from being reset by the subcommand's default.
    parser.add_argument("--json", action="store_true", default=argparse.SUPPRESS,
                        help="print one JSON document on stdout")


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``check`` on edgetpuctl's subparsers; ``args.func`` is ``run``."""
    parser = subparsers.add_parser(COMMAND, help=HELP, description=HELP)
    parser.error = types.MethodType(_Parser.error, parser)  # type: ignore[method-assign]  # usage errors exit 4
    add_arguments(parser)
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace, stdout: Optional[TextIO] = None, stderr: Optional[TextIO] = None) -> int:
    """Check ``args.model`` and print the report; return the exit code."""
    stdout = stdout or sys.stdout
    stderr = stderr or sys.stderr
    try:
        report = check_model(args.model, runtime_version=getattr(args, "runtime_version", DEFAULT_RUNTIME))
    except (ModelError, ValueError, OSError) as exc:
        print(f"edgetpuctl check: error: {exc}", file=stderr)
        return EXIT_BAD_INPUT
    except Exception as exc:  # a model we fail to understand must still not print a traceback
        print(f"edgetpuctl check: error: cannot check {args.model}: {type(exc).__name__}: {exc}",
              file=stderr)
        return EXIT_BAD_INPUT
    if getattr(args, "json", False):
        json.dump(report.to_dict(), stdout, indent=2)
        stdout.write("\n")
    else:
        stdout.write(render_text(report))
    return report.exit_code


def render_text(report: CompatibilityReport) -> str:
    """The human report: verdict, ops in execution order, the Operator/Count/Status table, warnings, notes."""
    lines = [f"Model: {report.model or '(bytes)'}", f"Edge TPU runtime version: {report.runtime_version}"]
    lines.append(f"Verdict: {report.verdict} ({_VERDICTS[report.verdict]})")
    lines.append(f"Operations on the Edge TPU: {report.tpu_ops}   on the CPU: {report.cpu_ops}")
    cut = report.cut_point
    if cut is not None:
        lines.append(f"Cut point: op {cut.index} ({cut.op}): {cut.reason}")
    lines.append("")
    width = max([len(e.op) for e in report.operators] + [8])
    lines.append(f"{'#':>4}  {'Operator':<{width}}  Target  Reason")
    for e in report.operators:
        reason = e.reason or ""
        lines.append(f"{e.index:>4}  {e.op:<{width}}  {e.target:<6}  {reason}".rstrip())
    lines.append("")
    rows = report.op_types()
    width = max([len(r["operator"]) for r in rows] + [8])
    lines.append(f"{'Operator':<{width}}  {'Count':>5}  Status")
    for r in rows:
        lines.append(f"{r['operator']:<{width}}  {r['count']:>5}  {r['status']}")
    lines += [""] + compiler_log_lines(report)
    if report.compiled is not None and report.compiled.ops_inside is not None:
        inside = ", ".join(f"{op} x{n}" for op, n in report.compiled.ops_inside.items())
        lines += ["", f"Inside the edgetpu-custom-op (from the CPU twin {report.compiled.twin}): {inside}"]
    observed = [f"{r['rule']} (ops {', '.join(map(str, r['ops']))}): {r['text']}"
                for r in report.observed_rules()]
    uncertain = [f"op {u['index']} ({u['op']}, {u['target']}): {u['text']}" for u in report.uncertain_ops()]
    for title, items in (
        ("Observed compiler behaviour (not documented)", observed),
        ("Uncertain (a threshold no document gives: the prediction may differ)", uncertain),
        ("Warnings", report.warnings),
        ("Notes", [n["text"] for n in report.notes]),
    ):
        if items:
            lines += ["", f"{title}:"] + [f"  - {item}" for item in items]
    return "\n".join(lines) + "\n"


def compiler_log_lines(report: CompatibilityReport) -> list[str]:
    """The summary as ``edgetpu_compiler -s`` prints it (same words, same columns), to diff against."""
    log = report.compiler_log()
    lines = [
        "As edgetpu_compiler -s would log it:",
        f"Number of operations that will run on Edge TPU: {log['edgetpu_ops']}",
        f"Number of operations that will run on CPU: {log['cpu_ops']}",
        "",
        f"{'Operator':<30} {'Count':<10} Status",
        "",
    ]
    lines += [f"{r['operator']:<30} {r['count']:<10} {r['status']}" for r in log["operators"]]
    return lines


class _Parser(argparse.ArgumentParser):
    """Usage errors exit 4 (bad input): argparse's usual 2 means "partially mapped" here."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        self.exit(EXIT_BAD_INPUT, f"{self.prog}: error: {message}\n")


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run ``check`` standalone: ``python -m edgetpud.daemon.cli.check MODEL.tflite``."""
    parser = _Parser(prog="edgetpuctl check", description=HELP)
    add_arguments(parser)
    args = parser.parse_args(argv)
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
