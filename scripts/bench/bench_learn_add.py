#!/usr/bin/env python3
"""What ``classes add`` with 5 images costs beyond the 5 embedding inferences it needs.

    added_ms = median(add 5 images, from the call to a servable, durably stored class)
             - median(the same 5 images embedded through the same daemon, as the add runs them)

The add is ``Client.add_samples`` (what ``edgetpuctl classes add`` sends): one client
stream of 5 encoded photos; it returns once the class serves and its samples and head
are committed to the SQLite store (WAL, synchronous=FULL) under the daemon's state dir.
The daemon embeds an add's images with up to ``EMBED_CONCURRENCY`` (4) in flight, so the
floor it is measured against, ``embed5``, is the same 5 encoded images sent as 5 Embed
calls with at most 4 in flight (grpc futures, request bytes built once). ``embed5_seq``,
the same 5 calls one after another through the client library, is reported beside it.

Every round measures each side once, in an order that rotates from round to round so
neither side always follows the other; the new class gets a label of its own each round
and is removed (untimed) after it, so the head stays at ``--standing`` classes plus one
and the 200-sample cap is never near. After each add (untimed) one classify checks that
the new label is served. Medians and p90 of each side, and of the per-round differences.
Target: added_ms <= 50. The mock device runs the model's CPU twin at CPU speed (its
simulated latency left at the default, none), so an inference here costs what this
host's CPU takes, and other processes on the host move both sides alike.

Usage: .venv/bin/python scripts/bench/bench_learn_add.py [--rounds 120] [--warmup 5]
           [--standing 5] [--state-parent DIR] [--device mock:1]
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Callable, Dict, List, Sequence

import grpc

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _daemon import test_data_dir  # noqa: E402
from _learn_daemon import EXTRACTOR_BUNDLE, EXTRACTOR_FILE, EmbeddingDaemon  # noqa: E402

from edgetpud.daemon.client import Client  # noqa: E402
from edgetpud.daemon.client import _convert  # noqa: E402
from edgetpud.protos.edgetpud.v1 import edgetpud_pb2 as pb  # noqa: E402

#: Five Coral test photos of different sizes and formats (the decode is part of both sides).
PHOTOS = ("cat.bmp", "parrot.jpg", "owl.jpg", "hot_dog.jpg", "grace_hopper.bmp")
#: Photos the standing classes are imprinted from (one each, cycled).
STANDING_PHOTOS = ("bird.bmp", "sunflower.bmp", "dragonfly.bmp", "face.jpg", "pets.jpg", "kite_and_cold.jpg")
#: Embeds the daemon keeps in flight for one add (edgetpud.daemon.learning.EMBED_CONCURRENCY).
IN_FLIGHT = 4
EMBED_METHOD = "/edgetpud.v1.Inference/Embed"


def percentile(values: Sequence[float], q: float) -> float:
    """The q-quantile (0..1) by linear interpolation; enough for a p90 of a hundred samples."""
    ordered = sorted(values)
    position = q * (len(ordered) - 1)
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def embed_in_flight(call: grpc.UnaryUnaryMultiCallable, requests: Sequence[bytes], in_flight: int) -> None:
    """Send ``requests`` with at most ``in_flight`` outstanding, as the daemon's add embeds its images.

    Raises:
        grpc.RpcError: any call fails.
    """
    pending: List[grpc.Future] = []
    for request in requests:
        if len(pending) >= in_flight:
            pending.pop(0).result()
        pending.append(call.future(request, timeout=60))
    for future in pending:
        future.result()


def filesystem_of(path: Path) -> str:
    """The type of the filesystem holding ``path`` (from /proc/self/mounts): an fsync on tmpfs is free."""
    best, kind = "", "unknown"
    try:
        mounts = Path("/proc/self/mounts").read_text().splitlines()
    except OSError:
        return kind
    resolved = str(path.resolve())
    for line in mounts:
        fields = line.split()
        if len(fields) >= 3 and (resolved == fields[1] or resolved.startswith(fields[1].rstrip("/") + "/")) \
                and len(fields[1]) >= len(best):
            best, kind = fields[1], fields[2]
    return kind


def ms(seconds: float) -> float:
    return round(seconds * 1000, 2)


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rounds", type=int, default=120, help="measured rounds (each side once a round)")
    parser.add_argument("--warmup", type=int, default=5, help="unmeasured rounds first")
    parser.add_argument("--standing", type=int, default=5,
                        help="classes the head holds besides the one added and removed each round")
    parser.add_argument("--device", default="mock:1", help="daemon device spec (default mock:1, no simulated latency)")
    parser.add_argument("--state-parent", type=Path, default=None,
                        help="make the daemon's folder (and its state dir) here instead of the system temp dir")
    args = parser.parse_args()
    if args.rounds < 2 or args.standing < 0:
        parser.error("--rounds must be at least 2 and --standing at least 0")
    data = test_data_dir()
    images = [(data / name).read_bytes() for name in PHOTOS]
    model = EXTRACTOR_BUNDLE
    requests = [_convert.encode_image_request(pb.EmbedRequest(model=model), image) for image in images]
    checks = {"served_every_round": True, "added_counts_ok": True}
    samples: Dict[str, List[float]] = {"add": [], "embed5": [], "embed5_seq": []}
    with EmbeddingDaemon([args.device], state_parent=args.state_parent) as daemon, \
            Client(daemon.address, timeout=60) as client, grpc.insecure_channel(daemon.address) as channel:
        state_dir = daemon.workdir / "state"
        embed_call = channel.unary_unary(EMBED_METHOD)
        for i in range(args.standing):
            photo = STANDING_PHOTOS[i % len(STANDING_PHOTOS)]
            client.add_samples(model, f"standing-{i}", images=[(data / photo).read_bytes()])
        label = ""

        def add() -> None:
            reply = client.add_samples(model, label, images=images)
            checks["added_counts_ok"] = checks["added_counts_ok"] and reply.added == len(images)

        sides: Dict[str, Callable[[], object]] = {
            "add": add,
            "embed5": lambda: embed_in_flight(embed_call, requests, IN_FLIGHT),
            "embed5_seq": lambda: [client.embed(model, image) for image in images],
        }
        names = list(sides)
        for r in range(args.warmup + args.rounds):
            label = f"bench-{r}"
            shift = r % len(names)
            for name in names[shift:] + names[:shift]:
                start = time.perf_counter()
                sides[name]()
                seconds = time.perf_counter() - start
                if r >= args.warmup:
                    samples[name].append(seconds)
                if name == "add":  # untimed: the class serves, then goes so the head stays bounded
                    served = [c.label for c in client.classify(model, images[0], top_k=args.standing + 1).classes]
                    checks["served_every_round"] = checks["served_every_round"] and label in served
                    client.remove_class(model, label)
        final = client.classes(model)
        final_classes = [c.label for c in final.classes]
        head_versions = len(client.heads(model))
        store_bytes = sum(f.stat().st_size for f in state_dir.rglob("*") if f.is_file())
        filesystem = filesystem_of(state_dir)
        startup_s = daemon.startup_s
    differences = [a - e for a, e in zip(samples["add"], samples["embed5"])]
    differences_seq = [a - e for a, e in zip(samples["add"], samples["embed5_seq"])]
    median = {name: statistics.median(v) for name, v in samples.items()}
    added = median["add"] - median["embed5"]
    print(json.dumps({
        "benchmark": "learn_add", "model": f"{EXTRACTOR_BUNDLE} ({EXTRACTOR_FILE})", "device": args.device,
        "images": list(PHOTOS), "rounds": args.rounds, "warmup": args.warmup,
        "head_classes": args.standing + 1, "order": "rotating: " + ", ".join(names),
        "add_ms": ms(median["add"]), "embed5_ms": ms(median["embed5"]), "embed5_seq_ms": ms(median["embed5_seq"]),
        "added_ms": ms(added),  # median(add) - median(embed5)
        "added_vs_seq_ms": ms(median["add"] - median["embed5_seq"]),
        "p90_ms": {name: ms(percentile(v, 0.9)) for name, v in samples.items()},
        # the same difference taken within each round, then its median and p90
        "added_paired_median_ms": ms(statistics.median(differences)),
        "added_paired_p90_ms": ms(percentile(differences, 0.9)),
        "added_vs_seq_paired_median_ms": ms(statistics.median(differences_seq)),
        "embed_in_flight": IN_FLIGHT,
        "target_ms": 50, "meets_target": added * 1000 <= 50,
        "checks": {**checks, "classes_after": final_classes},
        "state_dir_bytes_after": store_bytes,
        "head_versions_after": head_versions,
        "state_dir_filesystem": filesystem,
        "daemon_startup_s": round(startup_s, 2),
    }, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
