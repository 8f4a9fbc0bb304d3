#!/usr/bin/env python3
"""What the daemon's KServe path adds to one ModelInfer, in units of the least KServe server's round trip.

    ratio = (median ModelInfer from tritonclient.grpc to edgetpud over TCP
             - median of the same invoke in-process)
            / median ModelInfer from tritonclient.grpc to a bare KServe server over TCP

The bare server is the least a KServe server in Python can be: a grpc.aio
``GRPCInferenceServiceServicer`` (tritonclient's own stubs) whose ``ModelInfer``
hands the input back as the output. It runs in its own process; every round times
the three sides in a shuffled order, so load from other processes hits them alike.
Input: raw UINT8 (``raw_input_contents``). Target: ratio <= 1.5. Prints one JSON document.

tritonclient's protos clash with edgetpud's API stubs in one process, so this script
imports neither ``edgetpud.daemon.api`` nor the KServe stubs.

Usage: scripts/bench/bench_kserve.py [--rounds N] [--runs K] [--model NAME]
"""
from __future__ import annotations

import argparse
import json
import random
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Dict, List

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _daemon import BenchDaemon, test_data_dir  # noqa: E402

MODEL = "mobilenet_v1_0.25_128_quant"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def serve_bare(port: int) -> None:
    """The bare KServe server: ModelInfer answers the input as its output."""
    import asyncio

    import grpc
    from tritonclient.grpc import service_pb2 as pb, service_pb2_grpc as pb_grpc

    class Bare(pb_grpc.GRPCInferenceServiceServicer):
        async def ModelInfer(self, request, context):
            response = pb.ModelInferResponse(model_name=request.model_name, id=request.id)
            tensor = request.inputs[0]
            response.outputs.add(name="output", datatype=tensor.datatype, shape=tensor.shape)
            response.raw_output_contents.extend(request.raw_input_contents)
            return response

    async def main() -> None:
        server = grpc.aio.server()
        pb_grpc.add_GRPCInferenceServiceServicer_to_server(Bare(), server)
        server.add_insecure_port(f"127.0.0.1:{port}")
        await server.start()
        print("ready", flush=True)
        await server.wait_for_termination()

    asyncio.run(main())


def timed(call: Callable[[], object]) -> float:
    start = time.perf_counter()
    call()
    return time.perf_counter() - start


def one_run(rounds: int, model: str, daemon_url: str, bare_url: str) -> Dict[str, float]:
    import tritonclient.grpc as tc
    from edgetpud.hal.executor import TfliteExecutor

    executor = TfliteExecutor(test_data_dir() / f"{model}.tflite")
    spec = executor.inputs[0]
    data = np.random.default_rng(0).integers(0, 256, size=spec.shape, dtype=np.uint8)
    daemon, bare = tc.InferenceServerClient(url=daemon_url), tc.InferenceServerClient(url=bare_url)
    name = daemon.get_model_metadata(model, as_json=True)["inputs"][0]["name"]

    def infer(client: "tc.InferenceServerClient", target: str) -> Callable[[], object]:
        def call() -> object:
            x = tc.InferInput(name, list(spec.shape), "UINT8")
            x.set_data_from_numpy(data)
            return client.infer(target, [x])
        return call
    sides = {"daemon": infer(daemon, model), "bare": infer(bare, "echo"),
             "in_process": lambda: executor.invoke([data])}
    for call in sides.values():  # warm up
        for _ in range(20):
            call()
    times: Dict[str, List[float]] = {k: [] for k in sides}
    for _ in range(rounds):
        order = list(sides)
        random.shuffle(order)
        for key in order:
            times[key].append(timed(sides[key]))
    executor.close()
    daemon.close()
    bare.close()
    medians = {k: statistics.median(v) * 1000 for k, v in times.items()}
    return {"daemon_ms": medians["daemon"], "in_process_ms": medians["in_process"], "bare_ms": medians["bare"],
            "ratio": (medians["daemon"] - medians["in_process"]) / medians["bare"]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=300)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--model", default=MODEL)
    args = parser.parse_args()
    bare_port, daemon_port = free_port(), free_port()
    bare = subprocess.Popen([sys.executable, __file__, "--serve-bare", str(bare_port)], stdout=subprocess.PIPE,
                            text=True)
    try:
        assert bare.stdout is not None and bare.stdout.readline().strip() == "ready"
        with BenchDaemon(args.model, ["mock:1"], extra_listen=[f"127.0.0.1:{daemon_port}"]):
            runs = [one_run(args.rounds, args.model, f"127.0.0.1:{daemon_port}", f"127.0.0.1:{bare_port}")
                    for _ in range(args.runs)]
    finally:
        bare.terminate()
        bare.wait(10)
    ratios = [r["ratio"] for r in runs]
    print(json.dumps({"model": args.model, "rounds": args.rounds, "runs": runs,
                      "ratio_median": statistics.median(ratios), "target": 1.5,
                      "meets_target": statistics.median(ratios) <= 1.5}, indent=2))
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--serve-bare":
        serve_bare(int(sys.argv[2]))
    else:
        sys.exit(main())
