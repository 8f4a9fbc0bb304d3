#!/usr/bin/env python3
"""What edgetpud's own code adds to one request, layer by layer, without gRPC transport or image work.

bench_overhead measures the whole trip through the unix socket, where the host's
noise (process wake-ups, caches) moves medians by a tenth of a millisecond from
run to run. This benchmark holds still enough to see tens of microseconds: one
process, a real device worker (``--device`` mock by default), and three ways to
run the same invocation, interleaved:

    device_round_trip  DevicePool.submit and await the future (the HAL alone)
    service            Service.infer (+ registry lease, options, scheduler, timing)
    api                InferenceServicer.Classify on a ClassifyRequest message
                       (+ request conversion, status mapping, metrics, response message)

Preprocessing and postprocessing are replaced by their precomputed results on the
served model version, so what remains is edgetpud's Python between the caller and
the worker. Prints one JSON document with the medians and the differences (wall
time and CPU time of this process per request).

Hot (back to back) is the default. ``--idle-ms 8 --evict-mb 8`` has every call
follow a sleep and a sweep through memory, as a camera frame does that arrives
after the daemon slept through another request's JPEG decode: the same code then
runs from cold caches.

Usage: scripts/bench/bench_hotpath.py [--rounds N] [--runs K] [--idle-ms MS] [--evict-mb MB]
                                      [--model NAME] [--device SPEC]
"""
from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Awaitable, Callable, Dict, List

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _daemon import test_data_dir  # noqa: E402

from edgetpud.daemon.api.inference import InferenceServicer  # noqa: E402
from edgetpud.daemon.config import build_config  # noqa: E402
from edgetpud.daemon.main import tune_malloc  # noqa: E402
from edgetpud.daemon.service import ImageInput, InferenceRequest, RawFrame, Service  # noqa: E402
from edgetpud.protos.edgetpud.v1 import edgetpud_pb2 as pb  # noqa: E402

SIDES = ("device_round_trip", "service", "api")


class NoDeadlineContext:
    """The two things InferenceServicer asks of a grpc.aio context on a call that succeeds."""

    def time_remaining(self) -> None:
        return None

    async def abort(self, code: Any, message: str) -> None:
        raise RuntimeError(f"{code}: {message}")


def bundle(workdir: Path, model: str) -> Path:
    data = test_data_dir()
    folder = workdir / "models" / model
    folder.mkdir(parents=True)
    shutil.copyfile(data / f"{model}.tflite", folder / "model.tflite")
    shutil.copyfile(data / "imagenet_labels.txt", folder / "labels.txt")
    return folder.parent


def evictor(megabytes: int) -> Callable[[], None]:
    """A function that writes one byte per cache line of ``megabytes`` MiB (0: does nothing)."""
    block = np.zeros(megabytes << 20, np.uint8)

    def evict() -> None:
        block[::64] += 1
    return evict


async def measure(model: str, device_spec: str, rounds: int, warmup: int, idle_s: float = 0.0,
                  evict_mb: int = 0) -> Dict[str, Dict[str, float]]:
    """One run: a fresh Service, the three sides interleaved ``rounds`` times.

    With ``idle_s`` / ``evict_mb`` every call follows a sleep and a sweep through memory,
    as a request does that arrives after the daemon sat idle while other work ran.
    """
    evict = evictor(evict_mb)
    workdir = Path(tempfile.mkdtemp(prefix="edgetpud-hotpath-"))
    svc = Service(build_config({"devices": [device_spec], "models_dir": str(bundle(workdir, model)),
                                "state_dir": str(workdir / "state"), "log_level": "warning"}))
    await svc.start()
    try:
        mv = svc.registry.current(model)
        height, width = (int(d) for d in mv.bundle.inputs[0].shape[1:3])
        frame = np.random.default_rng(0).integers(0, 256, (height, width, 3), np.uint8)
        inputs, prepared = mv.session.preprocess(frame, "classify")
        device = sorted(svc.scheduler.usable())[0]
        outputs = await asyncio.wrap_future(svc.pool.submit(device, mv.key, inputs))
        answer = mv.session.postprocess("classify", outputs, prepared, top_k=3)
        # what remains of a request once its image work costs nothing
        mv.session.preprocess = lambda *args, **kwargs: (inputs, prepared)
        mv.session.postprocess = lambda *args, **kwargs: answer

        request = InferenceRequest(image=ImageInput(frame=RawFrame(frame.tobytes(), width, height, width * 3)),
                                   options={"top_k": 3})
        message = pb.ClassifyRequest(model=model, top_k=3, image=pb.Image(frame=pb.RawFrame(
            data=frame.tobytes(), width=width, height=height)))
        context = NoDeadlineContext()
        api = InferenceServicer(svc)
        sides: Dict[str, Callable[[], Awaitable[Any]]] = {
            "device_round_trip": lambda: asyncio.wrap_future(svc.pool.submit(device, mv.key, inputs)),
            "service": lambda: svc.infer(model, "classify", request),
            "api": lambda: api.Classify(message, context),
        }
        reply = await sides["api"]()
        assert [c.id for c in reply.classes] == [c.id for c in answer], "the api side must give the stubbed answer"
        wall: Dict[str, List[float]] = {name: [] for name in SIDES}
        cpu: Dict[str, List[float]] = {name: [] for name in SIDES}
        for i in range(warmup + rounds):
            for name in SIDES:
                if idle_s:
                    await asyncio.sleep(idle_s)
                evict()
                started_cpu, started = time.process_time(), time.perf_counter()
                await sides[name]()
                if i >= warmup:
                    wall[name].append(time.perf_counter() - started)
                    cpu[name].append(time.process_time() - started_cpu)
        return {"wall_us": {n: statistics.median(v) * 1e6 for n, v in wall.items()},
                # process_time ticks coarsely per call; its mean over many calls is what resolves
                "cpu_us": {n: statistics.fmean(v) * 1e6 for n, v in cpu.items()}}
    finally:
        await svc.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2000, help="measured calls per side and run")
    parser.add_argument("--warmup", type=int, default=200, help="unmeasured calls per side first")
    parser.add_argument("--runs", type=int, default=3, help="fresh services; the JSON reports the median run")
    parser.add_argument("--model", default="mobilenet_v1_0.25_128_quant")
    parser.add_argument("--device", default="mock:1", help="device spec (default mock:1, no simulated latency)")
    parser.add_argument("--idle-ms", type=float, default=0.0,
                        help="sleep this long before every call (the gap between a camera's frames)")
    parser.add_argument("--evict-mb", type=int, default=0,
                        help="before every call, sweep this many MiB of memory (what other work does to the caches)")
    args = parser.parse_args()
    tune_malloc()  # as the daemon runs
    runs = [asyncio.run(measure(args.model, args.device, args.rounds, args.warmup, args.idle_ms / 1e3,
                                args.evict_mb)) for _ in range(args.runs)]

    def median_of(kind: str, name: str) -> float:
        return round(statistics.median(r[kind][name] for r in runs), 1)

    def added(kind: str, upper: str, lower: str) -> List[float]:
        return [round(r[kind][upper] - r[kind][lower], 1) for r in runs]

    report = {
        "benchmark": "hotpath",
        "model": args.model,
        "device": args.device,
        "rounds": args.rounds,
        "runs": args.runs,
        "idle_ms": args.idle_ms,
        "evict_mb": args.evict_mb,
        "median_wall_us": {name: median_of("wall_us", name) for name in SIDES},
        "mean_cpu_us": {name: median_of("cpu_us", name) for name in SIDES},
        # per run, so the spread shows
        "service_adds_wall_us": added("wall_us", "service", "device_round_trip"),
        "api_adds_wall_us": added("wall_us", "api", "service"),
        "edgetpud_adds_wall_us": added("wall_us", "api", "device_round_trip"),
        "edgetpud_adds_cpu_us": added("cpu_us", "api", "device_round_trip"),
    }
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
