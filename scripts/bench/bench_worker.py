#!/usr/bin/env python3
"""Cost of the worker path: one inference through a device worker vs the same one in-process.

Runs the 224x224x3 MobileNet embedding extractor (from EDGETPUD_TEST_DATA, or --model)
on the CPU with one interpreter thread on both sides, and prints one JSON document:

  sequential_back_to_back   one request at a time, the next sent as soon as the last returns:
    in_process      TfliteExecutor.invoke in this process
    worker          DevicePool.submit(...).result() on a cpu worker
    added_us        worker median minus in-process median
    transport_us    per request: round trip minus the worker's own invoke time
                    (``future.invoke_s``), free of the model's run-to-run noise
  sequential_after_idle     the same, each request after the worker sat idle for one
                    invocation's time (a camera's frames): the OS must wake it up
  pipelined                 two requests kept in flight, as the scheduler does (capacity >= 2):
    interval_us     time between consecutive completions through the worker
    added_us        its median minus the in-process median
  platform_floor            what any process boundary costs on this machine, with no
                    edgetpud code: a bare pipe round trip of 12 bytes to a spawned
                    peer, replying at once (hot) or after sleeping for the
                    in-process invoke's median (idle: both sides wake from sleep,
                    as in the worker path)

Usage: EDGETPUD_TEST_DATA=../shared/coral-test-data .venv/bin/python scripts/bench/bench_worker.py [-n 200]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections import deque
from pathlib import Path
from typing import Any, Dict, List

import numpy as np

MODEL = "mobilenet_v1_1.0_224_quant_embedding_extractor.tflite"


def _echo_peer(conn: Any) -> None:
    """The floor's peer: echo each message after sleeping the seconds it names."""
    while True:
        message = conn.recv_bytes()
        if not message:
            return
        delay = float(message.decode())
        if delay:
            time.sleep(delay)
        conn.send_bytes(message)


def platform_floor(delay_s: float, iterations: int) -> Dict[str, Dict[str, float]]:
    """Round trips through a bare multiprocessing pipe, minus the peer's sleep."""
    import multiprocessing

    ours, theirs = multiprocessing.get_context("spawn").Pipe()
    peer = multiprocessing.get_context("spawn").Process(target=_echo_peer, args=(theirs,), daemon=True)
    peer.start()
    try:
        floors: Dict[str, Dict[str, float]] = {}
        for label, delay in (("hot", 0.0), ("idle", delay_s)):
            samples: List[float] = []
            message = f"{delay:.6f}".encode()
            for _ in range(iterations):
                t0 = time.perf_counter()
                ours.send_bytes(message)
                ours.recv_bytes()
                samples.append(time.perf_counter() - t0 - delay)
            floors[label] = summary(samples)
        return floors
    finally:
        ours.send_bytes(b"")
        peer.join(5)


def summary(samples_s: List[float]) -> Dict[str, float]:
    us = sorted(s * 1e6 for s in samples_s)
    return {"median_us": round(statistics.median(us), 1), "p90_us": round(us[int(0.9 * (len(us) - 1))], 1),
            "min_us": round(us[0], 1), "n": len(us)}


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("-n", "--iterations", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--model", help=f"a .tflite with a 224x224x3 input (default: {MODEL} from EDGETPUD_TEST_DATA)")
    args = parser.parse_args()
    model = Path(args.model) if args.model else Path(os.environ.get("EDGETPUD_TEST_DATA", "")) / MODEL
    if not model.is_file():
        print(f"model not found: {model} (set EDGETPUD_TEST_DATA or pass --model)", file=sys.stderr)
        return 2

    from edgetpud.hal import DevicePool, PoolOptions, TfliteExecutor

    executor = TfliteExecutor(model, num_threads=1)
    spec = executor.inputs[0]
    x = np.random.default_rng(0).integers(0, 255, spec.shape, dtype=np.uint8).astype(spec.dtype)

    pool = DevicePool(["cpu"], PoolOptions(num_threads=1, poll_interval_s=3600, rescan_interval_s=3600))
    pool.start()
    try:
        pool.load("cpu:0", "bench", model, model)
        # Back to back: blocks of 20 through the worker alternate with blocks of 20
        # in-process (drift in the shared host's load hits both alike).
        local: List[float] = []
        remote: List[float] = []
        transport: List[float] = []
        for _ in range(args.warmup):
            pool.submit("cpu:0", "bench", [x]).result(60)
            executor.invoke([x])
        while len(remote) < args.iterations:
            for _ in range(20):
                t0 = time.perf_counter()
                future = pool.submit("cpu:0", "bench", [x])
                got = future.result(60)
                t1 = time.perf_counter()
                remote.append(t1 - t0)
                transport.append((t1 - t0) - future.invoke_s)
            for _ in range(20):
                t0 = time.perf_counter()
                expected = executor.invoke([x])
                local.append(time.perf_counter() - t0)
        assert np.array_equal(got[0], expected[0]), "worker and in-process outputs differ"
        # After idle: strictly interleaved, so the worker has slept through one in-process
        # invocation (~the model's run time) before each request, like frames from a camera.
        idle_local: List[float] = []
        idle_remote: List[float] = []
        idle_transport: List[float] = []
        for i in range(args.iterations):
            t0 = time.perf_counter()
            executor.invoke([x])
            t1 = time.perf_counter()
            future = pool.submit("cpu:0", "bench", [x])
            future.result(60)
            t2 = time.perf_counter()
            idle_local.append(t1 - t0)
            idle_remote.append(t2 - t1)
            idle_transport.append((t2 - t1) - future.invoke_s)
        # Pipelined: two in flight; the interval between completions is the cost per inference.
        intervals: List[float] = []
        local_pipe: List[float] = []
        for _ in range(args.warmup):
            pool.submit("cpu:0", "bench", [x]).result(60)
        inflight = deque(pool.submit("cpu:0", "bench", [x]) for _ in range(2))
        last = time.perf_counter()
        for i in range(args.iterations):
            inflight.popleft().result(60)
            now = time.perf_counter()
            intervals.append(now - last)
            last = now
            inflight.append(pool.submit("cpu:0", "bench", [x]))
        for f in inflight:
            f.result(60)
        for _ in range(args.iterations):
            t0 = time.perf_counter()
            executor.invoke([x])
            local_pipe.append(time.perf_counter() - t0)
    finally:
        pool.stop()
        executor.close()
    floor = platform_floor(statistics.median(local), args.iterations)
    result = {
        "benchmark": "worker_shm_round_trip",
        "model": model.name,
        "input_shape": list(spec.shape),
        "input_dtype": str(spec.dtype),
        "budget_us": 100,
        "sequential_back_to_back": {
            "in_process": summary(local),
            "worker": summary(remote),
            "added_us": round((statistics.median(remote) - statistics.median(local)) * 1e6, 1),
            "transport_us": summary(transport),
        },
        "sequential_after_idle": {
            "in_process": summary(idle_local),
            "worker": summary(idle_remote),
            "added_us": round((statistics.median(idle_remote) - statistics.median(idle_local)) * 1e6, 1),
            "transport_us": summary(idle_transport),
        },
        "pipelined": {
            "in_process": summary(local_pipe),
            "interval_us": summary(intervals),
            "added_us": round((statistics.median(intervals) - statistics.median(local_pipe)) * 1e6, 1),
        },
        "platform_floor": floor,
        "sequential_after_idle_over_floor_us": round(
            statistics.median(idle_transport) * 1e6 - floor["idle"]["median_us"], 1),
        "cpus": os.cpu_count(),
        "loadavg": list(os.getloadavg()),
    }
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
