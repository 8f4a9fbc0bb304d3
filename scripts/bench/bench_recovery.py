#!/usr/bin/env python3
"""Recovery time: from killing a device worker to the device serving again.

Starts a DevicePool on mock devices (or --device cpu), loads a model, then
repeatedly kills one worker (SIGKILL, or SIGABRT as libedgetpu dies) and times:

  detect_ms    kill -> the pool reports the death ("failed" event; in-flight futures failed)
  restart_ms   kill -> "restarted" event (new worker spawned, models reloaded)
  serving_ms   kill -> first successful inference on that device

and checks that the other device kept serving meanwhile. Prints one JSON document.

Usage: EDGETPUD_TEST_DATA=../shared/coral-test-data .venv/bin/python scripts/bench/bench_recovery.py \
           [-n 5] [--signal SIGABRT] [--warm-spare]
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Dict, List

import numpy as np

MODEL = "mobilenet_v1_1.0_224_quant_embedding_extractor.tflite"


def summary(values_s: List[float]) -> Dict[str, float]:
    ms = sorted(v * 1e3 for v in values_s)
    return {"median_ms": round(statistics.median(ms), 1), "min_ms": round(ms[0], 1),
            "max_ms": round(ms[-1], 1), "n": len(ms)}


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("-n", "--rounds", type=int, default=5)
    parser.add_argument("--signal", choices=["SIGKILL", "SIGABRT"], default="SIGKILL")
    parser.add_argument("--model", help=f"default: {MODEL} from EDGETPUD_TEST_DATA")
    parser.add_argument("--warm-spare", action="store_true", help="keep a pre-started spare worker (PoolOptions(warm_spare=True))")
    args = parser.parse_args()
    model = Path(args.model) if args.model else Path(os.environ.get("EDGETPUD_TEST_DATA", "")) / MODEL
    if not model.is_file():
        print(f"model not found: {model} (set EDGETPUD_TEST_DATA or pass --model)", file=sys.stderr)
        return 2

    from edgetpud.hal import DevicePool, DeviceUnavailableError, PoolOptions

    sig = signal.Signals[args.signal]
    events: Dict[str, threading.Event] = {"failed": threading.Event(), "restarted": threading.Event()}
    stamps: Dict[str, float] = {}

    def on_change(info, event):
        if info.id == "mock:0" and event in events:
            stamps[event] = time.perf_counter()
            events[event].set()

    # stable_s=0: every round measures a first restart (minimum backoff), not a crash loop.
    options = PoolOptions(num_threads=1, poll_interval_s=3600, rescan_interval_s=3600, stable_s=0.0,
                          warm_spare=args.warm_spare)
    pool = DevicePool(["mock:2"], options, {"mock": {"latency_s": 0.005}})
    pool.on_change(on_change)
    pool.start()
    detect: List[float] = []
    restart: List[float] = []
    serving: List[float] = []
    other_ok = other_failed = 0
    try:
        for device in ("mock:0", "mock:1"):
            pool.load(device, "m", model, model)
        x = [np.zeros((1, 224, 224, 3), np.uint8)]
        stop = threading.Event()

        def keep_other_busy():
            nonlocal other_ok, other_failed
            while not stop.is_set():
                try:
                    pool.submit("mock:1", "m", x).result(30)
                    other_ok += 1
                except Exception:
                    other_failed += 1

        other = threading.Thread(target=keep_other_busy, daemon=True)
        other.start()
        for _ in range(args.rounds):
            for e in events.values():
                e.clear()
            inflight = [pool.submit("mock:0", "m", x) for _ in range(2)]
            pid = pool.device("mock:0").pid
            t0 = time.perf_counter()
            os.kill(pid, sig)
            for f in inflight:
                try:
                    f.result(30)
                except DeviceUnavailableError:
                    pass
            events["failed"].wait(30)
            events["restarted"].wait(60)
            while True:
                try:
                    pool.submit("mock:0", "m", x).result(30)
                    break
                except DeviceUnavailableError:
                    time.sleep(0.001)
            t_serving = time.perf_counter()
            detect.append(stamps["failed"] - t0)
            restart.append(stamps["restarted"] - t0)
            serving.append(t_serving - t0)
            time.sleep(1.0 if args.warm_spare else 0.2)  # let the next spare finish importing
        stop.set()
        other.join(30)
        restarts = pool.device("mock:0").restarts
    finally:
        pool.stop()
    print(json.dumps({
        "benchmark": "worker_recovery",
        "signal": args.signal,
        "warm_spare": args.warm_spare,
        "model": model.name,
        "detect": summary(detect),
        "restart": summary(restart),
        "serving_again": summary(serving),
        "restarts": restarts,
        "backoff_s": pool.options.backoff_s[0],
        "other_device": {"ok": other_ok, "failed": other_failed},
        "cpus": os.cpu_count(),
        "loadavg": list(os.getloadavg()),
    }, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
