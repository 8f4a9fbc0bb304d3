#!/usr/bin/env python3
"""What the daemon adds to one classify, in units of a bare gRPC round trip.

    overhead_ratio = (median classify through the daemon over its unix socket
                      - median of the same classify in-process)
                     / median of a bare gRPC echo of the same request bytes

The echo server (a grpc.aio server that returns the request bytes) runs in its
own process on a unix socket, like the daemon, and every round measures all of
them in turn so load from other processes hits them alike. A fourth server, the
gRPC layer (build_server) over a façade that answers at once, tells how much of
the overhead is the API layer and how much the service core and device worker.
A fifth, "in_handler", runs the same classify inside its gRPC handler (no device
worker, no scheduler, no API layer): its ratio is what any gRPC server that
computes out of the caller's process pays on this host. A sixth, "two_process",
is the least edgetpud's design (a worker process per device) can do: a gRPC handler that
preprocesses, leaves the input in shared memory, sends one byte down a pipe to a
worker process that invokes the model, and reads the worker's reply on its event
loop (no scheduler, no registry, no API layer, no metrics): the floor under the
daemon on this host. "daemon_same_bytes" sends the daemon the very request bytes
the echo and the floors get, so the client library's own work (building the
request, converting the answer) is left out; "client_library_ms" is that work.
Prints one JSON document. Target: overhead_ratio <= 1.2. The host is noisy (other
processes share its cores), so judge the median of several runs (``--runs 5``).

Every process of the run gets the daemon's glibc malloc settings: the daemon sets
them itself at start-up (``edgetpud.daemon.main.tune_malloc``: mmap threshold
8 MiB, trim threshold 16 MiB), and this script applies the same ``mallopt`` calls
in its own process (the client and the in-process side) and in the echo and
API-layer servers, so no side pays glibc's per-request page faults for large
buffers while another does not. ``--glibc-default-malloc`` leaves this script's
processes at glibc's defaults (the daemon cannot be untuned) to show what those
faults cost; the comparison is then skewed and the JSON says so.

Usage: scripts/bench/bench_overhead.py [--runs K] [--rounds N] [--model NAME] [--image FILE] [--frame WxH]
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import shutil
import tempfile
import time
from multiprocessing import shared_memory
from pathlib import Path
from typing import Any, Callable, Dict, List, Sequence, Tuple

import grpc
import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _daemon import BenchDaemon, test_data_dir  # noqa: E402
from _floor import round_trip, start_worker  # noqa: E402

from edgetpud.daemon.client import Client  # noqa: E402
from edgetpud.daemon.client import _convert  # noqa: E402
from edgetpud.daemon.main import tune_malloc  # noqa: E402
from edgetpud.daemon.model import load_model  # noqa: E402
from edgetpud.hal.wire import slot_layout  # noqa: E402
from edgetpud.protos.edgetpud.v1 import edgetpud_pb2 as pb  # noqa: E402

ECHO_METHOD = "/bench.Echo/Echo"
MAX_MESSAGE = 64 * 1024 * 1024


async def serve_one_method(address: str, service: str, method: str, handler: Callable[..., Any]) -> None:
    """A bare grpc.aio server with one unary method; says "ready" on stdout and serves until SIGTERM.

    The handler is a coroutine, so it runs on the event loop as the daemon's servicers
    do; a plain function would be sent to a thread pool and pay a thread round trip.
    """
    server = grpc.aio.server(options=[("grpc.max_receive_message_length", MAX_MESSAGE),
                                      ("grpc.max_send_message_length", MAX_MESSAGE)])
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(
        service, {method: grpc.unary_unary_rpc_method_handler(handler)})])
    server.add_insecure_port(address)
    await server.start()
    # terminate() from the bench stops serving, so a caller's clean-up (a worker, shared memory) runs
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, lambda: asyncio.ensure_future(server.stop(0)))
    print("ready", flush=True)
    await server.wait_for_termination()


_shared_objects: Dict[str, int] = {}  # region name -> descriptor on /dev/shm/NAME (the floor's "registration")


def _shared_pixels(span: Any) -> np.ndarray:
    """A shared span's bytes, read as the daemon reads them (a private copy by pread, no mapping)."""
    fd = _shared_objects.get(span.region)
    if fd is None:
        fd = _shared_objects[span.region] = os.open(f"/dev/shm/{span.region}", os.O_RDONLY)
    out = np.empty(span.byte_size, np.uint8)
    os.preadv(fd, [out], span.offset)
    return out


def request_image(message: Any) -> Any:
    """A ClassifyRequest's image as the bench sends it: encoded bytes, or a frame of packed RGB rows, in the
    message or in a shared-memory span whose region is named like its /dev/shm object (bench_shm)."""
    if message.image.HasField("frame"):
        frame = message.image.frame
        data = _shared_pixels(frame.shared) if frame.HasField("shared") else frame.data
        return np.frombuffer(data, np.uint8).reshape(frame.height, frame.width, 3)
    return message.image.encoded


def classify_response(top: Sequence[Any]) -> bytes:
    return pb.ClassifyResponse(classes=[pb.Class(id=c.id, score=c.score, label=c.label or "")
                                        for c in top]).SerializeToString()


def serve_echo(address: str) -> None:
    """The echo server process: returns every request's bytes unchanged."""
    async def echo(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        return request

    asyncio.run(serve_one_method(address, "bench.Echo", "Echo", echo))


class InstantService:
    """A Service façade that answers at once: isolates what the gRPC layer itself costs."""

    mock_control = None
    ready = True

    def __init__(self) -> None:
        from edgetpud.daemon.metrics import Metrics
        self.metrics = Metrics(devices=lambda: [], queue_depths=lambda: {})  # counted, as the daemon counts

    async def infer(self, model: str, task: str, request: Any, deadline: Any = None, version: Any = None) -> Any:
        from edgetpud.daemon.results import Class
        from edgetpud.daemon.service import InferenceResult
        return InferenceResult(model=model, version=1, device="none", timing={},
                               payload=[Class(1, "one", 0.5), Class(2, "two", 0.25), Class(3, None, 0.1)])

    def devices(self) -> list:
        return []


def serve_api(address: str) -> None:
    """The gRPC layer (build_server) over InstantService, in its own process."""
    async def main() -> None:
        from edgetpud.daemon.api.server import build_server
        from edgetpud.daemon.config import Config
        server = build_server(InstantService(), Config(listen=[address]))
        await server.start()
        print("ready", flush=True)
        await server.wait_for_termination()
    asyncio.run(main())


def serve_in_handler(address: str, model_path: str, labels: str) -> None:
    """The floor: a grpc.aio server whose Classify handler runs the model in its own process."""
    local = load_model(model_path, labels=labels)

    async def classify(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        message = pb.ClassifyRequest.FromString(request)
        return classify_response(local.classify(request_image(message), top_k=message.top_k))

    asyncio.run(serve_one_method(address, "bench.InHandler", "Classify", classify))


def slot_views(local: Any, buf: Any) -> Tuple[List[np.ndarray], List[np.ndarray]]:
    """The model's inputs and outputs as arrays in one shared-memory block, laid out as the daemon's workers do."""
    in_offsets, out_offsets, _ = slot_layout(local.inputs, local.outputs)

    def place(specs: Sequence[Any], offsets: Sequence[int]) -> List[np.ndarray]:
        return [np.ndarray(spec.shape, dtype=spec.dtype, buffer=buf, offset=o) for spec, o in zip(specs, offsets)]
    return place(local.inputs, in_offsets), place(local.outputs, out_offsets)


def two_process_worker(conn: Any, shm_name: str, model_path: str, labels: str) -> None:
    """The worker half of the two-process floor: invoke what the handler left in shared memory."""
    tune_malloc()
    local = load_model(model_path, labels=labels)
    shm = shared_memory.SharedMemory(shm_name)
    inputs, outputs = slot_views(local, shm.buf)
    conn.send_bytes(b"ready")
    try:
        while conn.recv_bytes():
            for view, array in zip(outputs, local.invoke(inputs)):
                np.copyto(view, array)
            conn.send_bytes(b"\x01")
    except EOFError:
        pass
    finally:
        del inputs, outputs
        shm.close()


def serve_two_process(address: str, model_path: str, labels: str) -> None:
    """The two-process floor: preprocess in the gRPC handler, invoke in a worker process, nothing else.

    One shared-memory slot, so one request at a time: the bench never sends two at once.
    """
    local = load_model(model_path, labels=labels)
    shm = shared_memory.SharedMemory(create=True, size=slot_layout(local.inputs, local.outputs)[2])
    inputs, outputs = slot_views(local, shm.buf)
    conn, worker = start_worker(two_process_worker, shm.name, model_path, labels)

    async def classify(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        message = pb.ClassifyRequest.FromString(request)
        tensors, prepared = local.preprocess(request_image(message), "classify")
        for view, tensor in zip(inputs, tensors):
            np.copyto(view, tensor)
        await round_trip(conn)
        top = local.postprocess("classify", [np.array(v) for v in outputs], prepared, top_k=message.top_k)
        return classify_response(top)

    try:
        asyncio.run(serve_one_method(address, "bench.TwoProcess", "Classify", classify))
    finally:
        conn.close()  # the worker sees the pipe close and ends
        worker.join(5)
        shm.unlink()  # the mapping itself goes with this process


def start_server(mode: str, address: str, default_malloc: bool, extra: List[str] = ()) -> subprocess.Popen:
    command = [sys.executable, __file__, mode, address, *extra] + (["--glibc-default-malloc"] if default_malloc else [])
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None and process.stdout.readline().strip() == "ready"
    return process


def timed(call: Callable[[], object]) -> float:
    start = time.perf_counter()
    call()
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=300, help="measured calls per side and run")
    parser.add_argument("--warmup", type=int, default=30, help="unmeasured calls per side first")
    parser.add_argument("--shuffle", action="store_true",
                        help="measure the sides in a new random order each round instead of the fixed order "
                        "the JSON reports: the daemon call then often follows the in-process one, whose JPEG "
                        "decode and inference evict the daemon's working set from the caches")
    parser.add_argument("--runs", type=int, default=1,
                        help="repeat the measurement with a fresh daemon; report the median of the runs")
    parser.add_argument("--model", default="mobilenet_v1_0.25_128_quant")
    parser.add_argument("--image", type=Path, default=None, help="default: parrot.jpg from the test data")
    parser.add_argument("--frame", metavar="WxH", help="send the image as a raw RGB frame of this size instead "
                        "of its encoded bytes (what a camera app does), e.g. 640x480")
    parser.add_argument("--device", default="mock:1", help="daemon device spec (default mock:1, no latency)")
    parser.add_argument("--tune-malloc", action="store_true",
                        help="accepted for old command lines: every process is tuned like the daemon by default")
    parser.add_argument("--glibc-default-malloc", action="store_true",
                        help="leave this script's processes (client, in-process, echo, API layer) at glibc's "
                        "malloc defaults while the daemon tunes its own: shows the page-fault cost, not a fair ratio")
    parser.add_argument("--echo-server", metavar="ADDRESS", help=argparse.SUPPRESS)
    parser.add_argument("--api-server", metavar="ADDRESS", help=argparse.SUPPRESS)
    parser.add_argument("--in-handler-server", metavar="ADDRESS", help=argparse.SUPPRESS)
    parser.add_argument("--two-process-server", metavar="ADDRESS", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if not args.glibc_default_malloc:
        tune_malloc()  # what the daemon does at start-up, so every side allocates alike
    if args.echo_server:
        serve_echo(args.echo_server)
        return 0
    if args.api_server:
        serve_api(args.api_server)
        return 0
    data = test_data_dir()
    model_path, labels_path = str(data / f"{args.model}.tflite"), str(data / "imagenet_labels.txt")
    if args.in_handler_server:
        serve_in_handler(args.in_handler_server, model_path, labels_path)
        return 0
    if args.two_process_server:
        serve_two_process(args.two_process_server, model_path, labels_path)
        return 0
    image_path = args.image or data / "parrot.jpg"
    image: Any = image_path.read_bytes()
    if args.frame:
        width, height = (int(v) for v in args.frame.lower().split("x"))
        image = np.asarray(Image.open(image_path).convert("RGB").resize((width, height)))
    request_bytes = pb.ClassifyRequest(model=args.model, image=_convert.image(image), top_k=3).SerializeToString()
    local = load_model(model_path, labels=labels_path)
    sockets = Path(tempfile.mkdtemp(prefix="edgetpud-echo-"))
    echo_address, api_address = f"unix:{sockets / 'echo.sock'}", f"unix:{sockets / 'api.sock'}"
    floor_address = f"unix:{sockets / 'in-handler.sock'}"
    two_address = f"unix:{sockets / 'two-process.sock'}"
    echo = start_server("--echo-server", echo_address, args.glibc_default_malloc)
    api = start_server("--api-server", api_address, args.glibc_default_malloc)
    floor = start_server("--in-handler-server", floor_address, args.glibc_default_malloc, ["--model", args.model])
    two = start_server("--two-process-server", two_address, args.glibc_default_malloc, ["--model", args.model])
    shuffler = random.Random(20261121)
    per_run: List[Dict[str, float]] = []
    pooled: Dict[str, List[float]] = {}
    startup: List[float] = []
    try:
        options = [("grpc.max_send_message_length", MAX_MESSAGE), ("grpc.max_receive_message_length", MAX_MESSAGE)]
        for _ in range(args.runs):  # a fresh daemon each run: its start-up luck counts too
            with BenchDaemon(args.model, [args.device]) as daemon, Client(daemon.address) as client, \
                    grpc.insecure_channel(echo_address, options=options) as channel, Client(api_address) as api_only, \
                    grpc.insecure_channel(floor_address, options=options) as floor_channel, \
                    grpc.insecure_channel(two_address, options=options) as two_channel, \
                    grpc.insecure_channel(daemon.address, options=options) as daemon_channel:
                echo_call = channel.unary_unary(ECHO_METHOD)
                floor_call = floor_channel.unary_unary("/bench.InHandler/Classify")
                two_call = two_channel.unary_unary("/bench.TwoProcess/Classify")
                daemon_call = daemon_channel.unary_unary("/edgetpud.v1.Inference/Classify")
                # In this order no call follows one to the same server, whose caches it would find warm,
                # and both daemon sides follow another server's classify (a client that slept as long),
                # so that their difference is the client library's and not the order's.
                runs: Dict[str, Callable[[], object]] = {
                    "daemon": lambda: client.classify(args.model, image, top_k=3),
                    "in_process": lambda: local.classify(image, top_k=3),
                    "echo": lambda: echo_call(request_bytes, timeout=30),
                    "api_layer_only": lambda: api_only.classify(args.model, image, top_k=3),
                    "two_process": lambda: two_call(request_bytes, timeout=30),
                    "daemon_same_bytes": lambda: daemon_call(request_bytes, timeout=30),
                    "in_handler": lambda: floor_call(request_bytes, timeout=30),
                }
                expected = [c.id for c in local.classify(image, top_k=3)]
                same = [c.id for c in client.classify(args.model, image, top_k=3).classes] == expected
                for call in (floor_call, two_call, daemon_call):
                    same = same and [c.id for c in pb.ClassifyResponse.FromString(call(request_bytes)).classes] == expected
                samples: Dict[str, List[float]] = {name: [] for name in runs}
                order = list(runs)
                for i in range(args.warmup + args.rounds):
                    if args.shuffle:
                        shuffler.shuffle(order)
                    for name in order:
                        run = runs[name]
                        seconds = timed(run)
                        if i >= args.warmup:
                            samples[name].append(seconds)
                startup.append(daemon.startup_s)
            per_run.append({name: statistics.median(values) for name, values in samples.items()})
            for name, values in samples.items():
                pooled.setdefault(name, []).extend(values)
    finally:
        for process in (echo, api, floor, two):
            process.terminate()
            process.wait(10)
        shutil.rmtree(sockets, ignore_errors=True)
        local.close()
    ratios = [(m["daemon"] - m["in_process"]) / m["echo"] for m in per_run]
    def ratios_of(side: str) -> List[float]:
        return [(m[side] - m["in_process"]) / m["echo"] for m in per_run]
    floor_ratios = ratios_of("in_handler")
    median = {name: statistics.median(m[name] for m in per_run) for name in per_run[0]}
    ratio = statistics.median(ratios)
    print(json.dumps({
        "benchmark": "overhead", "model": args.model, "device": args.device,
        "input": f"raw RGB frame {args.frame}" if args.frame else f"encoded {image_path.name}",
        "request_bytes": len(request_bytes), "rounds": args.rounds, "runs": args.runs,
        "order": "shuffled each round" if args.shuffle else ", ".join(runs),
        "same_top3_as_in_process": same,  # the daemon's and the in-handler server's answers
        # with --runs N: the median over the runs of each run's median (and of the runs' ratios)
        "median_ms": {name: round(value * 1000, 3) for name, value in median.items()},
        "p90_ms": {name: round(statistics.quantiles(v, n=10)[-1] * 1000, 3) for name, v in pooled.items()},
        "overhead_ms": round((median["daemon"] - median["in_process"]) * 1000, 3),
        "overhead_ratio": round(ratio, 3),
        "overhead_ratio_per_run": [round(r, 3) for r in ratios],
        # The gRPC layer alone (build_server over a façade that answers at once) versus the bare echo:
        "api_layer_vs_echo_ms": round((median["api_layer_only"] - median["echo"]) * 1000, 3),
        # The same ratio for a gRPC server that classifies in its own handler: what any server out of
        # the caller's process pays here; overhead_ratio minus it is what the worker and service add.
        "in_handler_floor_ratio": round(statistics.median(floor_ratios), 3),
        # The least the worker-per-device design can cost here (see the docstring), and
        # what the daemon adds above it: its scheduler, registry, API layer, metrics and mock device.
        "two_process_floor_ratio": round(statistics.median(ratios_of("two_process")), 3),
        "above_two_process_floor": round(ratio - statistics.median(ratios_of("two_process")), 3),
        # The daemon sent the same request bytes as the echo and the floors (no client library):
        "overhead_ratio_same_bytes": round(statistics.median(ratios_of("daemon_same_bytes")), 3),
        "client_library_ms": round((median["daemon"] - median["daemon_same_bytes"]) * 1000, 3),
        "target": 1.2, "meets_target": ratio <= 1.2,
        "daemon_startup_s": round(statistics.median(startup), 2),
        "malloc": ("glibc defaults in the bench processes, tuned in the daemon (skewed comparison)"
                   if args.glibc_default_malloc else
                   "every process tuned like the daemon (mmap threshold 8 MiB, trim threshold 16 MiB)"),
    }, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
