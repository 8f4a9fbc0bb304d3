#!/usr/bin/env python3
"""Throughput of the daemon when camera streams ask for more than the devices can give.

Runs edgetpud on mock devices with a fixed simulated invoke latency L, points N
streaming clients (default 8, each with its own connection, frames kept, two in
flight each) at it for a while, and counts the frames answered per second in a
measuring window after a warm-up. A device that never idles serves 1/L frames per
second, so the targets are: one device >= 0.95 x 1/L, two devices >= 1.9 x 1/L.

Prints one JSON document.

Usage: scripts/bench/bench_saturation.py [--mock-latency-ms 20] [--clients 8] [--seconds 5]
"""
from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from pathlib import Path
from typing import Dict, List

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _daemon import BenchDaemon, test_data_dir  # noqa: E402

from edgetpud.daemon.client import Client, ClientError  # noqa: E402

MODEL = "mobilenet_v1_0.25_128_quant"


def run_clients(address: str, frame: np.ndarray, clients: int, warmup_s: float, seconds: float,
                in_flight: int) -> Dict[str, object]:
    """Stream from ``clients`` threads; count answered frames inside the measuring window."""
    start = time.monotonic() + 0.5
    window = (start + warmup_s, start + warmup_s + seconds)
    counts: List[int] = [0] * clients
    failures: List[str] = []
    devices: Dict[str, int] = {}
    lock = threading.Lock()

    def frames():
        while time.monotonic() < window[1]:
            yield frame

    def camera(index: int) -> None:
        with Client(address, timeout=None) as client:
            while time.monotonic() < start:
                time.sleep(0.001)
            try:
                for result in client.stream(MODEL, frames(), max_in_flight=in_flight, top_k=1):
                    now = time.monotonic()
                    if not result.ok:
                        with lock:
                            failures.append(result.status if result.error is None else result.error.code_name)
                        continue
                    if window[0] <= now < window[1]:
                        counts[index] += 1
                        with lock:
                            devices[result.result.device] = devices.get(result.result.device, 0) + 1
            except ClientError as exc:
                with lock:
                    failures.append(exc.code_name)

    threads = [threading.Thread(target=camera, args=(i,), daemon=True) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    total = sum(counts)
    return {"frames": total, "fps": round(total / seconds, 2),
            "per_client_fps": [round(c / seconds, 2) for c in counts],
            "by_device": dict(sorted(devices.items())), "failures": len(failures),
            "failure_kinds": sorted(set(failures))}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mock-latency-ms", type=float, default=20.0)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=5.0, help="measuring window")
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--in-flight", type=int, default=2, help="frames each stream keeps in flight")
    parser.add_argument("--frame", default="128x128", metavar="WxH", help="raw RGB frame size sent")
    args = parser.parse_args()
    latency = args.mock_latency_ms / 1000.0
    width, height = (int(v) for v in args.frame.lower().split("x"))
    frame = np.asarray(Image.open(test_data_dir() / "cat.bmp").convert("RGB").resize((width, height)))
    ideal = 1.0 / latency
    report: Dict[str, object] = {"benchmark": "saturation", "model": MODEL, "mock_latency_ms": args.mock_latency_ms,
                                 "clients": args.clients, "in_flight_per_client": args.in_flight,
                                 "frame": f"raw RGB {args.frame}", "seconds": args.seconds,
                                 "ideal_fps_per_device": round(ideal, 2), "runs": {}}
    for count, target in ((1, 0.95), (2, 1.9)):
        with BenchDaemon(MODEL, [f"mock:{count}"], mock_latency_s=latency) as daemon:
            result = run_clients(daemon.address, frame, args.clients, args.warmup, args.seconds, args.in_flight)
        result["vs_one_device_ideal"] = round(result["fps"] / ideal, 3)  # type: ignore[operator]
        result["target"] = target
        result["meets_target"] = result["vs_one_device_ideal"] >= target  # type: ignore[operator]
        report["runs"][f"mock:{count}"] = result  # type: ignore[index]
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
