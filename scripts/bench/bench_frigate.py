#!/usr/bin/env python3
"""Frigate's zmq detector endpoint: its added time, and saturation beside gRPC streams.

The model is a synthetic SSD detector built here (daemon/model/builder.py): a
[1, 320, 320, 3] uint8 input (Frigate's default detector size), average-pooled to
four anchors, ending in TFLite_Detection_PostProcess, so it is cheap on the CPU.

1. overhead (mock:1, no simulated latency), interleaved rounds of: the model run in
   process (the bare interpreter), one Frigate request to the daemon's endpoint, a
   bare ZMQ REQ/REP echo of the same tensor by a separate process, and the floor of
   the daemon's design: the least asyncio ROUTER endpoint that hands the tensor to a
   worker process through shared memory and a pipe, as the daemon does (no
   scheduler, no registry, no checks). Target: the daemon's added time (median round
   trip - median in-process) <= 1.5 x the echo; reported beside it, the floor's own
   ratio and how far the daemon is above it (``above_two_process_floor``).
2. saturation (mock:2, latency L): 4 Frigate clients (REQ, one request at a time, as
   Frigate) and 4 gRPC streams at once. Target: answers per second >= 1.9 x 1/L.

Prints one JSON document.

Usage: scripts/bench/bench_frigate.py [--rounds 300] [--mock-latency-ms 20] [--seconds 5]
"""
from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from multiprocessing import shared_memory
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np
import zmq

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _daemon import BenchDaemon  # noqa: E402
from _floor import round_trip, start_worker  # noqa: E402

from edgetpud.daemon.client import Client, ClientError  # noqa: E402
from edgetpud.daemon.frigate import protocol
from edgetpud.daemon.model.builder import ModelBuilder
from edgetpud.hal.executor import TfliteExecutor

MODEL = "frigate_ssd"
SIZE = 320
ECHO_SERVER = """
import sys, zmq
sock = zmq.Context().socket(zmq.REP)
sock.bind(sys.argv[1])
print("ready", flush=True)
while True:
    sock.send_multipart(sock.recv_multipart(copy=False), copy=False)
"""


def build_detector() -> bytes:
    """[1,320,320,3] uint8 -> 4 anchors -> TFLite_Detection_PostProcess."""
    b = ModelBuilder("synthetic frigate ssd for the benchmark")
    image = b.input("image", [1, SIZE, SIZE, 3], np.uint8, scale=1 / 255, zero_point=0)
    pooled = b.average_pool2d(image, SIZE // 2, SIZE // 2)
    scores = b.reshape(pooled, [1, 4, 3])
    anchors = np.array([[0.25, 0.25, 0.5, 0.5], [0.25, 0.75, 0.5, 0.5], [0.75, 0.25, 0.5, 0.5],
                        [0.75, 0.75, 0.5, 0.5]], np.float32)
    outputs = b.detection_postprocess(b.const("box_encodings", np.zeros((1, 4, 4), np.float32)), scores,
                                      b.const("anchors", anchors), max_detections=4, nms_score_threshold=0.01,
                                      nms_iou_threshold=0.5)
    b.output(*outputs)
    return b.build()


class Daemon(BenchDaemon):
    """edgetpud serving the synthetic detector on a unix socket and a Frigate ipc endpoint."""

    def __init__(self, model: bytes, devices: List[str], latency_s: Optional[float]) -> None:
        endpoint_dir = Path(tempfile.mkdtemp(prefix="edgetpud-bench-frigate-"))
        self.endpoint = f"ipc://{endpoint_dir / 'frigate.ipc'}"
        super().__init__(MODEL, devices, latency_s, task="detect", model_bytes=model,
                         extra_config=[f'zmq_listen = ["{self.endpoint}"]'])
        self._endpoint_dir = endpoint_dir

    def __exit__(self, *exc: object) -> None:
        super().__exit__(*exc)
        shutil.rmtree(self._endpoint_dir, ignore_errors=True)


def floor_worker(conn: Any, shm_name: str, model_path: str) -> None:
    """The worker half of the floor: invoke on the tensor left in shared memory, leave the outputs there."""
    interpreter = TfliteExecutor(Path(model_path))
    shm = shared_memory.SharedMemory(shm_name)
    tensor = np.ndarray((1, SIZE, SIZE, 3), np.uint8, buffer=shm.buf)
    outputs = np.ndarray((4 * 4 + 4 + 4 + 1,), np.float32, buffer=shm.buf, offset=tensor.nbytes)
    conn.send_bytes(b"ready")
    try:
        while conn.recv_bytes():
            outputs[:] = np.concatenate([np.asarray(a, np.float32).reshape(-1) for a in interpreter.invoke([tensor])])
            conn.send_bytes(b"\x01")
    except EOFError:
        pass


def serve_floor(endpoint: str, model_path: str, ready: Any) -> None:
    """The floor: a ROUTER socket on an asyncio loop, one worker process, Frigate's rows; nothing else.

    One shared-memory slot, so one request at a time: the bench never sends two at once.
    """
    shm = shared_memory.SharedMemory(create=True, size=SIZE * SIZE * 3 + 25 * 4)
    tensor = np.ndarray((1, SIZE, SIZE, 3), np.uint8, buffer=shm.buf)
    outputs = np.ndarray((25,), np.float32, buffer=shm.buf, offset=tensor.nbytes)
    conn, worker = start_worker(floor_worker, shm.name, model_path)
    sock = zmq.Context().socket(zmq.ROUTER)
    sock.bind(endpoint)
    loop = asyncio.new_event_loop()

    async def answer(envelope: List[bytes], frames: List[Any]) -> None:
        json.loads(bytes(frames[0]))
        np.copyto(tensor, np.frombuffer(frames[1].buffer, np.uint8).reshape(tensor.shape))
        await round_trip(conn)
        out = outputs.copy()
        rows = protocol.detection_rows(out[:16].reshape(4, 4), out[16:20], out[20:24], int(out[24]))
        sock.send_multipart(envelope + protocol.detections_reply(rows), flags=zmq.NOBLOCK, copy=False)
        if sock.getsockopt(zmq.EVENTS) & zmq.POLLIN:
            loop.call_soon(drain)

    def drain() -> None:
        while True:
            try:
                frames = sock.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                return
            loop.create_task(answer([frames[0].bytes, b""], frames[2:]))

    loop.add_reader(sock.getsockopt(zmq.FD), drain)
    ready.set()
    loop.run_forever()


def frigate_socket(context: zmq.Context, endpoint: str, timeout_ms: int) -> zmq.Socket:
    """A REQ socket as Frigate's plugin makes it, after its handshake."""
    sock = context.socket(zmq.REQ)
    for option, value in ((zmq.RCVTIMEO, 30000), (zmq.SNDTIMEO, timeout_ms), (zmq.LINGER, 0)):
        sock.setsockopt(option, value)
    sock.connect(endpoint)
    sock.send_multipart([json.dumps({"model_request": True, "model_name": f"{MODEL}.tflite"}).encode()])
    answer = json.loads(sock.recv_multipart()[0])
    if not (answer.get("model_available") and answer.get("model_loaded")):
        raise SystemExit(f"the handshake failed: {answer}")
    sock.setsockopt(zmq.RCVTIMEO, timeout_ms)
    return sock


def ask(sock: zmq.Socket, frames: List[bytes]) -> List[bytes]:
    sock.send_multipart(frames, copy=False)
    return sock.recv_multipart()


def overhead(model: bytes, tensor: np.ndarray, rounds: int) -> Dict[str, object]:
    """Interleaved: in-process run, Frigate request, bare echo; medians in ms."""
    frames = [json.dumps({"shape": list(tensor.shape), "dtype": "uint8", "model_type": "ssd"}).encode(),
              tensor.tobytes()]
    tmp = Path(tempfile.mkdtemp(prefix="edgetpud-bench-echo-"))
    echo_endpoint = f"ipc://{tmp / 'echo.ipc'}"
    echo = subprocess.Popen([sys.executable, "-c", ECHO_SERVER, echo_endpoint], stdout=subprocess.PIPE)
    model_path = tmp / "model.tflite"
    model_path.write_bytes(model)
    interpreter = TfliteExecutor(model_path)
    spawn = multiprocessing.get_context("spawn")
    floor_ready = spawn.Event()
    floor_endpoint = f"ipc://{tmp / 'floor.ipc'}"
    floor = spawn.Process(target=serve_floor, args=(floor_endpoint, str(model_path), floor_ready))
    floor.start()
    context = zmq.Context()
    times: Dict[str, List[float]] = {"in_process": [], "frigate": [], "echo": [], "floor": []}
    try:
        assert echo.stdout is not None and echo.stdout.readline().strip() == b"ready"
        assert floor_ready.wait(60), "the floor server did not start"
        echo_sock = context.socket(zmq.REQ)
        echo_sock.setsockopt(zmq.LINGER, 0)
        echo_sock.connect(echo_endpoint)
        floor_sock = context.socket(zmq.REQ)
        floor_sock.setsockopt(zmq.LINGER, 0)
        floor_sock.connect(floor_endpoint)
        with Daemon(model, ["mock:1"], None) as daemon:
            frigate = frigate_socket(context, daemon.endpoint, 5000)
            for i in range(rounds + 20):
                t0 = time.perf_counter()
                interpreter.invoke([tensor])
                t1 = time.perf_counter()
                reply = ask(frigate, frames)
                t2 = time.perf_counter()
                ask(echo_sock, frames)
                t3 = time.perf_counter()
                floor_reply = ask(floor_sock, frames)
                t4 = time.perf_counter()
                if len(reply) != 2 or "error" in json.loads(reply[0]):
                    raise SystemExit(f"the endpoint answered with an error: {reply[0]!r}")
                if reply[1] != floor_reply[1]:
                    raise SystemExit("the floor's rows differ from the daemon's: it is not doing the same work")
                if i >= 20:  # warm-up rounds are not counted
                    for key, seconds in (("in_process", t1 - t0), ("frigate", t2 - t1), ("echo", t3 - t2),
                                         ("floor", t4 - t3)):
                        times[key].append(seconds * 1000)
            frigate.close(0)
        echo_sock.close(0)
        floor_sock.close(0)
    finally:
        echo.kill()
        echo.wait()
        floor.kill()
        floor.join()
        interpreter.close()
        context.term()
        shutil.rmtree(tmp, ignore_errors=True)
    med = {k: statistics.median(v) for k, v in times.items()}
    added = med["frigate"] - med["in_process"]
    ratio = added / med["echo"]
    floor_ratio = (med["floor"] - med["in_process"]) / med["echo"]
    return {"rounds": rounds, "median_ms": {k: round(v, 4) for k, v in med.items()},
            "added_ms": round(added, 4), "added_vs_echo": round(ratio, 3), "target": 1.5,
            "meets_target": ratio <= 1.5, "two_process_floor_vs_echo": round(floor_ratio, 3),
            "above_two_process_floor": round(ratio - floor_ratio, 3)}


def saturation(model: bytes, tensor: np.ndarray, latency_s: float, seconds: float, warmup_s: float,
               frigates: int, streams: int) -> Dict[str, object]:
    """Frigate clients and gRPC streams at once on mock:2; answers per second inside the window."""
    frames = [json.dumps({"shape": list(tensor.shape), "dtype": "uint8", "model_type": "ssd"}).encode(),
              tensor.tobytes()]
    frame = tensor[0]
    counts = {"frigate": 0, "grpc": 0}
    failures: List[str] = []
    lock = threading.Lock()
    with Daemon(model, ["mock:2"], latency_s) as daemon:
        context = zmq.Context()
        start = time.monotonic() + 1.0
        window = (start + warmup_s, start + warmup_s + seconds)

        def frigate_client() -> None:
            sock = frigate_socket(context, daemon.endpoint, 1000)
            while time.monotonic() < start:
                time.sleep(0.001)
            try:
                while time.monotonic() < window[1]:
                    try:
                        reply = ask(sock, frames)
                    except zmq.Again:
                        with lock:
                            failures.append("frigate timeout")
                        sock.close(0)
                        sock = frigate_socket(context, daemon.endpoint, 1000)
                        continue
                    ok = len(reply) == 2 and "error" not in json.loads(reply[0])
                    with lock:
                        if not ok:
                            failures.append(f"frigate: {reply[0][:200]!r}")
                        elif window[0] <= time.monotonic() < window[1]:
                            counts["frigate"] += 1
            finally:
                sock.close(0)

        def grpc_stream() -> None:
            def frames_until_end():
                while time.monotonic() < window[1]:
                    yield frame

            with Client(daemon.address, timeout=None) as client:
                while time.monotonic() < start:
                    time.sleep(0.001)
                try:
                    for result in client.stream(MODEL, frames_until_end(), task="detect", max_in_flight=2):
                        with lock:
                            if not result.ok:
                                failures.append(f"grpc: {result.status} {result.error}")
                            elif window[0] <= time.monotonic() < window[1]:
                                counts["grpc"] += 1
                except ClientError as exc:
                    with lock:
                        failures.append(f"grpc: {exc.code_name}")

        threads = ([threading.Thread(target=frigate_client) for _ in range(frigates)]
                   + [threading.Thread(target=grpc_stream) for _ in range(streams)])
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        context.term()
    fps = (counts["frigate"] + counts["grpc"]) / seconds
    ideal = 1.0 / latency_s
    return {"devices": "mock:2", "mock_latency_ms": latency_s * 1000, "frigate_clients": frigates,
            "grpc_streams": streams, "seconds": seconds, "fps": round(fps, 2),
            "frigate_fps": round(counts["frigate"] / seconds, 2), "grpc_fps": round(counts["grpc"] / seconds, 2),
            "vs_one_device_ideal": round(fps / ideal, 3), "target": 1.9, "meets_target": fps / ideal >= 1.9,
            "failures": len(failures), "failure_kinds": sorted(set(failures))[:5]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=300)
    parser.add_argument("--mock-latency-ms", type=float, default=20.0)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--frigates", type=int, default=4)
    parser.add_argument("--streams", type=int, default=4)
    args = parser.parse_args()
    model = build_detector()
    rng = np.random.default_rng(0)
    tensor = rng.integers(0, 256, (1, SIZE, SIZE, 3), dtype=np.uint8)
    report = {"benchmark": "frigate", "model": f"synthetic SSD, uint8 [1,{SIZE},{SIZE},3]",
              "tensor_bytes": tensor.nbytes,
              "overhead": overhead(model, tensor, args.rounds),
              "saturation": saturation(model, tensor, args.mock_latency_ms / 1000.0, args.seconds, args.warmup,
                                       args.frigates, args.streams)}
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
