#!/usr/bin/env python3
"""What the learning store costs: one durable add_samples call, and opening a full store.

The daemon's budget for a whole ``classes add`` of 5 images is 50 ms above the
5 embedding inferences, so the store's share (5 embeddings of 1024 floats and
5 JPEGs of 50 KB, committed with fsync) must stay well below that. Opening runs
``PRAGMA quick_check`` over the whole file, so its cost grows with the store:
measured on 10,000 samples of 1024 floats (warm page cache; a cold SD card reads slower).

Prints one JSON document. The store is made in ``--dir`` (default: the system's
temporary folder), which must be on the disk the daemon's --state-dir is on:
a tmpfs there measures no fsync at all, and the JSON says which file system it was.

Usage: scripts/bench/bench_store.py [--runs N] [--dir DIR] [--open-samples N]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Dict, List

import numpy as np

from edgetpud.daemon.learn.store import Store, content_hash, store_path

DIM = 1024
BATCH = 5
IMAGE_BYTES = 50 * 1024


def filesystem_of(path: Path) -> str:
    """The type of the file system ``path`` is on, from /proc/mounts (longest matching mount point)."""
    best, kind = "", "unknown"
    try:
        with open("/proc/mounts") as f:
            for line in f:
                parts = line.split()
                mount = parts[1]
                if str(path).startswith(mount) and len(mount) > len(best):
                    best, kind = mount, parts[2]
    except OSError:
        pass
    return kind


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return (time.perf_counter() - start) * 1000.0


def summary(ms: List[float]) -> Dict[str, float]:
    ordered = sorted(ms)
    return {"median_ms": round(statistics.median(ordered), 3),
            "p90_ms": round(ordered[int(0.9 * (len(ordered) - 1))], 3),
            "min_ms": round(ordered[0], 3), "max_ms": round(ordered[-1], 3), "runs": len(ordered)}


def bench_add(folder: Path, runs: int, rng: np.random.Generator) -> Dict[str, object]:
    base = content_hash(b"bench base")
    images = [rng.integers(0, 256, IMAGE_BYTES, dtype=np.uint8).tobytes() for _ in range(BATCH)]
    with Store(store_path(folder / "add")) as store:
        store.add_samples("warmup", "w", rng.normal(size=(1, DIM)), [None], base)
        ms = [timed(lambda i=i: store.add_samples("m", f"class{i}", rng.normal(size=(BATCH, DIM)), images, base))
              for i in range(runs)]
    return {"what": f"add_samples: {BATCH} embeddings of {DIM} float32 + {BATCH} images of {IMAGE_BYTES} bytes, "
                    "one transaction, commit (fsync) included", **summary(ms)}


def bench_open(folder: Path, samples: int, rng: np.random.Generator) -> Dict[str, object]:
    base = content_hash(b"bench base")
    path = store_path(folder / "open")
    with Store(path, max_samples_per_class=10 ** 9, max_bytes_per_model=1 << 40) as store:
        for start in range(0, samples, 500):
            n = min(500, samples - start)
            store.add_samples("m", f"c{start // 200}", rng.normal(size=(n, DIM)), [None] * n, base)
        read_ms = timed(lambda: store.embeddings("m"))
        add_ms = timed(lambda: store.add_samples("m", "one-more", rng.normal(size=(BATCH, DIM)), [None] * BATCH,
                                                 base))
    open_ms = [timed(lambda: Store(path).close()) for _ in range(3)]

    def integrity() -> None:
        conn = sqlite3.connect(path)
        conn.execute("PRAGMA integrity_check").fetchall()
        conn.close()

    return {"what": f"Store() open with PRAGMA quick_check on {samples} samples of {DIM} float32, warm cache",
            "file_bytes": os.path.getsize(path), "open_median_ms": round(statistics.median(open_ms), 1),
            "integrity_check_ms": round(timed(integrity), 1),
            "read_all_embeddings_ms": round(read_ms, 1),
            "add_samples_without_images_in_full_store_ms": round(add_ms, 2)}


def main(argv: List[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()))
    parser.add_argument("--open-samples", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    folder = Path(tempfile.mkdtemp(prefix="bench_store.", dir=args.dir)).resolve()
    fs = filesystem_of(folder)
    if fs == "tmpfs":
        print(f"warning: {folder} is on tmpfs: fsync costs nothing there; pass --dir on the state disk",
              file=sys.stderr)
    rng = np.random.default_rng(args.seed)
    try:
        result = {"dir": str(folder), "filesystem": fs, "sqlite": sqlite3.sqlite_version,
                  "add_samples": bench_add(folder, args.runs, rng),
                  "open": bench_open(folder, args.open_samples, rng),
                  "budget_ms": 50}
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    result["add_samples_share_of_budget"] = round(result["add_samples"]["median_ms"] / 50, 3)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
