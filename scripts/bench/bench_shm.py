#!/usr/bin/env python3
"""Classify of a 1280x720 frame handed over in shared memory: what the daemon adds, in bare gRPC echoes.

    ratio = (median classify of a SharedFrame through the daemon - median in-process classify)
            / median round trip of the frame's request bytes through a bare grpc.aio echo server

Every round times, in a shuffled order: the same frame classified in this process with
the library (``load_model(...).classify``: preprocessing and invoke), classified
through the daemon (``mock:1``, unix socket) from a ``Client.shared_frames`` ring, the
same frame sent in the message (``RawFrame.data``) for comparison, the echo
(bench_overhead's echo server) of that frame-in-the-message request, and
bench_overhead's two-process floor sent the shared-frame request (a gRPC handler that
reads the span by pread, preprocesses and hands the input to one worker process):
the least the daemon's design can do with a frame in shared memory on this host.
Every process is tuned like the daemon's malloc. Target: ratio <= 0.3. Prints one JSON document.

Usage: scripts/bench/bench_shm.py [--rounds N] [--runs K] [--model NAME] [--size 1280x720]
"""
from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Callable, Dict, List

import grpc
import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _daemon import BenchDaemon, test_data_dir  # noqa: E402
from bench_overhead import ECHO_METHOD, MAX_MESSAGE, start_server, timed  # noqa: E402

from edgetpud.daemon.client import Client  # noqa: E402
from edgetpud.daemon.client import _convert  # noqa: E402
from edgetpud.daemon.main import tune_malloc  # noqa: E402
from edgetpud.daemon.model import load_model  # noqa: E402
from edgetpud.protos.edgetpud.v1 import edgetpud_pb2 as pb  # noqa: E402

MODEL = "mobilenet_v1_0.25_128_quant"
TARGET = 0.3


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--model", default=MODEL)
    parser.add_argument("--size", default="1280x720")
    args = parser.parse_args()
    tune_malloc()  # as the daemon and bench_overhead's servers do, so every side allocates alike
    width, height = (int(v) for v in args.size.lower().split("x"))
    data = test_data_dir()
    frame = np.asarray(Image.open(data / "parrot.jpg").convert("RGB").resize((width, height)))
    local = load_model(str(data / f"{args.model}.tflite"), labels=str(data / "imagenet_labels.txt"))
    request_bytes = pb.ClassifyRequest(model=args.model, image=_convert.image(frame), top_k=3).SerializeToString()
    sockets = Path(tempfile.mkdtemp(prefix="edgetpud-bench-shm-"))
    echo_address, floor_address = f"unix:{sockets / 'echo.sock'}", f"unix:{sockets / 'two-process.sock'}"
    echo = start_server("--echo-server", echo_address, False)
    floor = start_server("--two-process-server", floor_address, False, ["--model", args.model])
    shuffler = random.Random(20261202)
    per_run: List[Dict[str, float]] = []
    same = True
    options = [("grpc.max_send_message_length", MAX_MESSAGE), ("grpc.max_receive_message_length", MAX_MESSAGE)]
    want = [c.id for c in local.classify(frame, top_k=3)]
    try:
        for _ in range(args.runs):
            with BenchDaemon(args.model, ["mock:1"]) as daemon, Client(daemon.address) as client, \
                    grpc.insecure_channel(echo_address, options=options) as channel, \
                    grpc.insecure_channel(floor_address, options=options) as floor_channel, \
                    client.shared_frames(width, height, slots=1) as ring:
                echo_call = channel.unary_unary(ECHO_METHOD)
                daemon_call = client._channel.unary_unary("/edgetpud.v1.Inference/Classify")
                floor_call = floor_channel.unary_unary("/bench.TwoProcess/Classify")
                ring.put(frame).release()  # the slot keeps the frame: every call below sends it without a copy
                floor_request = pb.ClassifyRequest(model=args.model, top_k=3)
                _, held = ring.acquire(timeout=10)
                floor_request.image.frame.CopyFrom(_convert.shared_frame(held))  # the same span, read directly
                held.release()
                floor_bytes = floor_request.SerializeToString()
                sides: Dict[str, Callable[[], object]] = {
                    "in_process": lambda: local.classify(frame, top_k=3),
                    "shared": lambda: client.classify(args.model, ring.acquire(timeout=10)[1], top_k=3),
                    "in_message": lambda: client.classify(args.model, frame, top_k=3),
                    "echo": lambda: echo_call(request_bytes, timeout=30),
                    "two_process_floor": lambda: floor_call(floor_bytes, timeout=30),
                    "shared_same_bytes": lambda: daemon_call(floor_bytes, timeout=30),
                }
                got = [c.id for c in client.classify(args.model, ring.acquire(timeout=10)[1], top_k=3).classes]
                floor_got = [c.id for c in pb.ClassifyResponse.FromString(floor_call(floor_bytes)).classes]
                same = same and got == want and floor_got == want
                times: Dict[str, List[float]] = {name: [] for name in sides}
                for i in range(args.rounds + 20):
                    order = list(sides)
                    shuffler.shuffle(order)
                    for name in order:
                        seconds = timed(sides[name])
                        if i >= 20:
                            times[name].append(seconds)
                per_run.append({name: statistics.median(values) for name, values in times.items()})
    finally:
        for server in (echo, floor):
            server.terminate()
            server.wait()
    ratios = [(m["shared"] - m["in_process"]) / m["echo"] for m in per_run]
    in_message = [(m["in_message"] - m["in_process"]) / m["echo"] for m in per_run]
    floors = [(m["two_process_floor"] - m["in_process"]) / m["echo"] for m in per_run]
    ratio = statistics.median(ratios)
    print(json.dumps({
        "benchmark": "shm", "model": args.model, "frame": f"{width}x{height} RGB", "frame_bytes": frame.nbytes,
        "rounds": args.rounds,
        "runs": [{k: round(v * 1000, 4) for k, v in m.items()} for m in per_run],
        "median_ms": {k: round(statistics.median(m[k] for m in per_run) * 1000, 4) for k in per_run[0]},
        "shared_added_vs_echo": round(ratio, 3), "runs_shared_added_vs_echo": [round(r, 3) for r in ratios],
        "in_message_added_vs_echo": round(statistics.median(in_message), 3),
        "two_process_floor_vs_echo": round(statistics.median(floors), 3),
        "above_two_process_floor": round(ratio - statistics.median(floors), 3),
        "client_library_ms": round(statistics.median(m["shared"] - m["shared_same_bytes"] for m in per_run) * 1000, 3),
        "same_top3_as_in_process": same, "target": TARGET, "meets_target": ratio <= TARGET,
    }, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
