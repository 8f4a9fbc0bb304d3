"""``edgetpuctl metrics``: request counts, latency percentiles and device utilisation, for operators
without Prometheus (the daemon's Status RPC carries the summary of what its metrics count)."""
from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any, Dict

from . import output
from .exits import EXIT_OK

if TYPE_CHECKING:
    from .main import Context


def add_parser(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    sub.add_parser("metrics", help="requests per model (count, errors, latency percentiles) and device "
                                   "utilisation since the daemon started").set_defaults(func=cmd_metrics)


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f}"


def cmd_metrics(ctx: "Context") -> int:
    status = ctx.client.status()
    document: Dict[str, Any] = {"uptime_s": status.uptime_s, "requests": [output.plain(r) for r in status.requests],
                                "devices": [output.plain(u) for u in status.usage]}
    requests = output.table(
        ["MODEL", "REQUESTS", "ERRORS", "P50 MS", "P90 MS", "P99 MS", "CODES"],
        [[r.model or "(no model)", r.count, r.errors, _ms(r.p50_s), _ms(r.p90_s), _ms(r.p99_s),
          ",".join(f"{code}={n}" for code, n in r.codes.items())] for r in status.requests]) \
        if status.requests else "no requests yet\n"
    usage = output.table(
        ["DEVICE", "INVOCATIONS", "BUSY S", "UTILISATION"],
        [[u.device, u.invocations, f"{u.busy_s:.2f}", f"{u.utilization:.1%}"] for u in status.usage]) \
        if status.usage else "no devices\n"
    ctx.emit(document, f"since the daemon started {status.uptime_s:.0f} s ago (latency percentiles are estimated "
                       f"from histogram buckets)\n\n{requests}\n{usage}")
    return EXIT_OK
