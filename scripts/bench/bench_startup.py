#!/usr/bin/env python3
"""Start-up time to READY=1 and resident memory of edgetpud with one model on --device mock.

Starts the real daemon with a fake $NOTIFY_SOCKET (as systemd would), times the
READY=1 datagram, then reads RSS (and PSS, which splits shared pages fairly) of
the daemon and its device workers from /proc. Prints one JSON document.

    EDGETPUD_TEST_DATA=../shared/coral-test-data python scripts/bench/bench_startup.py --runs 3
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List

MODEL = "mobilenet_v1_0.5_160_quant"


def descendants(pid: int) -> List[int]:
    """Every process below ``pid`` (from /proc/PID/task/*/children)."""
    out: List[int] = []
    stack = [pid]
    while stack:
        current = stack.pop()
        try:
            tasks = os.listdir(f"/proc/{current}/task")
        except OSError:
            continue
        for task in tasks:
            try:
                text = Path(f"/proc/{current}/task/{task}/children").read_text()
            except OSError:
                continue
            for child in text.split():
                out.append(int(child))
                stack.append(int(child))
    return out


def memory_kib(pid: int) -> Dict[str, int]:
    """VmRSS from status and Pss from smaps_rollup, in KiB (0 when unreadable)."""
    values = {"rss_kib": 0, "pss_kib": 0}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                values["rss_kib"] = int(line.split()[1])
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                values["pss_kib"] = int(line.split()[1])
    except OSError:
        pass
    return values


def command_of(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()[:120]
    except OSError:
        return "?"


def one_run(workdir: Path, models: Path, devices: int, timeout: float) -> Dict[str, object]:
    notify_path = workdir / "notify.sock"
    if notify_path.exists():
        notify_path.unlink()
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind(str(notify_path))
    listener.settimeout(0.1)
    env = dict(os.environ, NOTIFY_SOCKET=str(notify_path))
    args = [sys.executable, "-m", "edgetpud.daemon.main", "--device", f"mock:{devices}", "--models", str(models),
            "--state-dir", str(workdir / "state"), "--listen", f"unix:{workdir / 'edgetpud.sock'}",
            "--log-level", "warning"]
    started = time.monotonic()
    proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            start_new_session=True)
    try:
        ready_s = None
        while time.monotonic() - started < timeout:
            try:
                message = listener.recv(65536).decode()
            except socket.timeout:
                if proc.poll() is not None:
                    raise RuntimeError(f"edgetpud exited with {proc.returncode}: {proc.stderr.read().decode()[-2000:]}")
                continue
            if "READY=1" in message.split("\n"):
                ready_s = time.monotonic() - started
                break
        if ready_s is None:
            raise RuntimeError(f"no READY=1 within {timeout} s")
        time.sleep(0.5)  # let the allocator settle after the warm-up invocation
        children = descendants(proc.pid)
        main_mem = memory_kib(proc.pid)
        workers = [{"pid": pid, "cmd": command_of(pid), **memory_kib(pid)} for pid in children]
        stop_started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(60)
        return {
            "ready_s": round(ready_s, 3),
            "stop_s": round(time.monotonic() - stop_started, 3),
            "exit_code": code,
            "daemon_rss_mib": round(main_mem["rss_kib"] / 1024, 1),
            "daemon_pss_mib": round(main_mem["pss_kib"] / 1024, 1),
            "children": [{**w, "rss_mib": round(w["rss_kib"] / 1024, 1), "pss_mib": round(w["pss_kib"] / 1024, 1)}
                         for w in workers],
            "total_rss_mib": round((main_mem["rss_kib"] + sum(w["rss_kib"] for w in workers)) / 1024, 1),
            "total_pss_mib": round((main_mem["pss_kib"] + sum(w["pss_kib"] for w in workers)) / 1024, 1),
        }
    finally:
        listener.close()
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--devices", type=int, default=1, help="number of mock devices")
    parser.add_argument("--test-data", default=os.environ.get("EDGETPUD_TEST_DATA", ""))
    parser.add_argument("--timeout", type=float, default=120.0)
    args = parser.parse_args()
    if not args.test_data:
        parser.error("set EDGETPUD_TEST_DATA or pass --test-data (the Coral test data folder)")
    with tempfile.TemporaryDirectory(prefix="edgetpud-bench-") as tmp:
        workdir = Path(tmp)
        bundle = workdir / "models" / MODEL
        bundle.mkdir(parents=True)
        shutil.copy(Path(args.test_data) / f"{MODEL}.tflite", bundle / "model.tflite")
        shutil.copy(Path(args.test_data) / "imagenet_labels.txt", bundle / "labels.txt")
        runs = [one_run(workdir, workdir / "models", args.devices, args.timeout) for _ in range(args.runs)]
    result = {
        "benchmark": "startup",
        "model": MODEL,
        "devices": f"mock:{args.devices}",
        "runs": len(runs),
        "ready_s_median": statistics.median(r["ready_s"] for r in runs),
        "ready_s_min": min(r["ready_s"] for r in runs),
        "stop_s_median": statistics.median(r["stop_s"] for r in runs),
        "total_rss_mib_median": statistics.median(r["total_rss_mib"] for r in runs),
        "total_pss_mib_median": statistics.median(r["total_pss_mib"] for r in runs),
        "daemon_rss_mib_median": statistics.median(r["daemon_rss_mib"] for r in runs),
        "python": sys.version.split()[0],
        "cpus": os.cpu_count(),
        "load_avg_1m": os.getloadavg()[0],
        "detail": runs,
    }
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
