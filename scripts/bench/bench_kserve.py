#!/usr/bin/env python3
"""What the daemon's KServe path adds to one ModelInfer, in units of the least KServe server's round trip.

    ratio = (median ModelInfer from tritonclient.grpc to edgetpud over TCP
             - median of the same invoke in-process)
            / median ModelInfer from tritonclient.grpc to a bare KServe server over TCP

The bare server is the least a KServe server in Python can be: a grpc.aio
``GRPCInferenceServiceServicer`` (tritonclient's own stubs) whose ``ModelInfer``
hands the input back as the output. It runs in its own process; every round times
the sides in a shuffled order, so load from other processes hits them alike.
Input: raw UINT8 (``raw_input_contents``). Target: ratio <= 1.5. Prints one JSON document.

A fourth side, "floor", is the least the daemon's design can do over KServe: a server like
the bare one whose ModelInfer hands the input to one worker process (shared memory and a
byte down a pipe, bench_overhead's two-process worker) and answers the model's outputs;
``floor_ratio`` is its added time in the same units, ``above_floor`` what edgetpud adds over it.

tritonclient's protos clash with edgetpud's API stubs in one process, so this script
imports neither ``edgetpud.daemon.api`` nor the KServe stubs.

Usage: scripts/bench/bench_kserve.py [--rounds N] [--runs K] [--model NAME]
"""
from __future__ import annotations

import argparse
import asyncio
import json
import random
import signal
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


async def serve_kserve(port: int, servicer: object) -> None:
    """Serve ``servicer`` (tritonclient's GRPCInferenceService) on 127.0.0.1:``port`` until SIGTERM.

    SIGTERM ends the server, not the process, so whatever the caller set up (a worker, shared
    memory) is torn down by its own ``finally``.
    """
    import grpc
    from tritonclient.grpc import service_pb2_grpc as pb_grpc

    server = grpc.aio.server()
    pb_grpc.add_GRPCInferenceServiceServicer_to_server(servicer, server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, lambda: asyncio.ensure_future(server.stop(0)))
    print("ready", flush=True)
    await server.wait_for_termination()


def serve_bare(port: int) -> None:
    """The bare KServe server: ModelInfer answers the input as its output."""
    from tritonclient.grpc import service_pb2 as pb, service_pb2_grpc as pb_grpc

    class Bare(pb_grpc.GRPCInferenceServiceServicer):
        async def ModelInfer(self, request, context):
            response = pb.ModelInferResponse(model_name=request.model_name, id=request.id)
            tensor = request.inputs[0]
            response.outputs.add(name="output", datatype=tensor.datatype, shape=tensor.shape)
            response.raw_output_contents.extend(request.raw_input_contents)
            return response

    asyncio.run(serve_kserve(port, Bare()))


def serve_floor(port: int, model: str) -> None:
    """The design's floor: a KServe server whose ModelInfer leaves the input in shared memory, wakes one
    worker process through a pipe, and answers the model's outputs (no scheduler, registry or checks).

    One shared-memory slot, so one request at a time: the bench never sends two at once.
    """
    from multiprocessing import shared_memory

    from _floor import round_trip, start_worker
    from bench_overhead import slot_views, two_process_worker
    from tritonclient.grpc import service_pb2 as pb, service_pb2_grpc as pb_grpc

    from edgetpud.daemon.main import tune_malloc
    from edgetpud.daemon.model import load_model
    from edgetpud.hal.wire import slot_layout

    tune_malloc()  # as the daemon does
    model_path, labels = str(test_data_dir() / f"{model}.tflite"), str(test_data_dir() / "imagenet_labels.txt")
    local = load_model(model_path, labels=labels)
    shm = shared_memory.SharedMemory(create=True, size=slot_layout(local.inputs, local.outputs)[2])
    inputs, outputs = slot_views(local, shm.buf)
    conn, worker = start_worker(two_process_worker, shm.name, model_path, labels)

    class Floor(pb_grpc.GRPCInferenceServiceServicer):
        async def ModelInfer(self, request, context):
            np.copyto(inputs[0], np.frombuffer(request.raw_input_contents[0], np.uint8).reshape(inputs[0].shape))
            await round_trip(conn)
            response = pb.ModelInferResponse(model_name=request.model_name, id=request.id)
            for spec, view in zip(local.outputs, outputs):
                response.outputs.add(name=spec.name, datatype="UINT8", shape=list(view.shape))
                response.raw_output_contents.append(view.tobytes())
            return response

    try:
        asyncio.run(serve_kserve(port, Floor()))
    finally:
        conn.close()
        worker.join(5)
        shm.unlink()


def timed(call: Callable[[], object]) -> float:
    start = time.perf_counter()
    call()
    return time.perf_counter() - start


def one_run(rounds: int, model: str, daemon_url: str, bare_url: str, floor_url: str) -> Dict[str, float]:
    import tritonclient.grpc as tc
    from edgetpud.hal.executor import TfliteExecutor

    executor = TfliteExecutor(test_data_dir() / f"{model}.tflite")
    spec = executor.inputs[0]
    data = np.random.default_rng(0).integers(0, 256, size=spec.shape, dtype=np.uint8)
    daemon, bare = tc.InferenceServerClient(url=daemon_url), tc.InferenceServerClient(url=bare_url)
    floor = tc.InferenceServerClient(url=floor_url)
    name = daemon.get_model_metadata(model, as_json=True)["inputs"][0]["name"]

    def infer(client: "tc.InferenceServerClient", target: str) -> Callable[[], object]:
        def call() -> object:
            x = tc.InferInput(name, list(spec.shape), "UINT8")
            x.set_data_from_numpy(data)
            return client.infer(target, [x])
        return call
    sides = {"daemon": infer(daemon, model), "bare": infer(bare, "echo"), "floor": infer(floor, model),
             "in_process": lambda: executor.invoke([data])}
    want = sides["daemon"]().as_numpy(executor.outputs[0].name)
    same = bool(np.array_equal(want, sides["floor"]().as_numpy(executor.outputs[0].name)))
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
    for client in (daemon, bare, floor):
        client.close()
    medians = {k: statistics.median(v) * 1000 for k, v in times.items()}
    return {"daemon_ms": medians["daemon"], "in_process_ms": medians["in_process"], "bare_ms": medians["bare"],
            "floor_ms": medians["floor"], "floor_same_outputs": same,
            "ratio": (medians["daemon"] - medians["in_process"]) / medians["bare"],
            "floor_ratio": (medians["floor"] - medians["in_process"]) / medians["bare"]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=300)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--model", default=MODEL)
    args = parser.parse_args()
    bare_port, daemon_port, floor_port = free_port(), free_port(), free_port()
    servers = [subprocess.Popen([sys.executable, __file__, flag, str(port)] + extra, stdout=subprocess.PIPE, text=True)
               for flag, port, extra in (("--serve-bare", bare_port, []),
                                         ("--serve-floor", floor_port, [args.model]))]
    try:
        for server in servers:
            assert server.stdout is not None and server.stdout.readline().strip() == "ready"
        with BenchDaemon(args.model, ["mock:1"], extra_listen=[f"127.0.0.1:{daemon_port}"]):
            runs = [one_run(args.rounds, args.model, f"127.0.0.1:{daemon_port}", f"127.0.0.1:{bare_port}",
                            f"127.0.0.1:{floor_port}") for _ in range(args.runs)]
    finally:
        for server in servers:
            server.terminate()
            server.wait(10)
    ratio = statistics.median(r["ratio"] for r in runs)
    floor = statistics.median(r["floor_ratio"] for r in runs)
    print(json.dumps({"model": args.model, "rounds": args.rounds, "runs": runs,
                      "ratio_median": ratio, "floor_ratio_median": floor, "above_floor": ratio - floor,
                      "target": 1.5, "meets_target": ratio <= 1.5}, indent=2))
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--serve-bare":
        serve_bare(int(sys.argv[2]))
    elif len(sys.argv) == 4 and sys.argv[1] == "--serve-floor":
        serve_floor(int(sys.argv[2]), sys.argv[3])
    else:
        sys.exit(main())
