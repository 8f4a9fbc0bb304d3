#!/usr/bin/env python3
"""One softmax-regression SGD iteration against the time of its own two matrix products.

An iteration of last-layer backpropagation (``edgetpud.daemon.learn.softmax_regression``)
is ``Z = X·W + b``, softmax, ``G = (P - Y)/B``, ``dW = Xᵀ·G + l2·W``, and the update. Its
floor is the two products alone (``X·W`` and ``Xᵀ·G`` into preallocated outputs, same
shapes, same BLAS): everything else should cost little beside them. Default problem:
10 classes x 200 samples x 1024 dims, L2-normalized features, l2 > 0 (the decay is on).

    full_batch   the headline: one step on all 2000 samples (B = 2000)
    minibatch    one step on a batch of --batch-size rows (a view into the epoch's
                 shuffled copy, as ``train`` runs it)
    train_epoch  ``train`` itself for --epochs epochs at --batch-size, per iteration:
                 adds the per-epoch shuffle and the per-epoch loss/accuracy pass

Each side is timed once per round, the sides interleaved over --rounds rounds; the
JSON holds medians in milliseconds and ratio = iteration / floor (target: <= 3).
BLAS threads default to 1 (set before NumPy loads) so other work on the host moves
the figures less; --threads 0 keeps the library's default.

Usage: .venv/bin/python scripts/bench/bench_backprop.py [--rounds 200] [--classes 10]
           [--per-class 200] [--dim 1024] [--batch-size 100] [--threads 1]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from typing import Any, Callable, Dict, List


def _median_ms(samples: List[float]) -> float:
    return round(statistics.median(samples) * 1e3, 4)


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--per-class", type=int, default=200)
    parser.add_argument("--dim", type=int, default=1024)
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--epochs", type=int, default=5, help="epochs of each timed train() call")
    parser.add_argument("--l2", type=float, default=1e-3)
    parser.add_argument("--threads", type=int, default=1, help="BLAS threads (0: the library's default)")
    args = parser.parse_args()
    if args.threads > 0:
        for name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ[name] = str(args.threads)

    import numpy as np

    from edgetpud.daemon.learn.head import l2_normalize
    from edgetpud.daemon.learn.softmax_regression import SoftmaxSGD, train

    rng = np.random.default_rng(0)
    k, d = args.classes, args.dim
    n = k * args.per_class
    centers = rng.normal(size=(k, d)).astype(np.float32)
    labels = np.repeat(np.arange(k), args.per_class)
    raw = centers[labels] + rng.normal(scale=2.0, size=(n, d)).astype(np.float32)
    x = np.ascontiguousarray(l2_normalize(raw))
    order = rng.permutation(n)
    x_shuffled, y_shuffled = x[order], labels[order]
    batch = min(args.batch_size, n)
    onehot = np.eye(k, dtype=np.float32)
    targets, targets_shuffled = onehot[labels], onehot[y_shuffled]
    xb, tb = x_shuffled[:batch], targets_shuffled[:batch]

    w0 = (rng.normal(size=(d, k)) * 0.01).astype(np.float32)
    full = SoftmaxSGD(w0, np.zeros(k, np.float32), 0.01, args.l2, n)
    mini = SoftmaxSGD(w0, np.zeros(k, np.float32), 0.01, args.l2, batch)

    def floor_of(rows: Any) -> Callable[[], None]:
        z = np.empty((rows.shape[0], k), np.float32)
        g = (rng.normal(size=(rows.shape[0], k)) * 0.01).astype(np.float32)
        dw = np.empty((d, k), np.float32)
        w = w0.copy()

        def products() -> None:
            np.matmul(rows, w, out=z)
            np.matmul(rows.T, g, out=dw)
        return products

    steps_per_epoch = -(-n // batch)

    def train_epochs() -> None:
        train(raw, labels, learning_rate=0.01, batch_size=batch, epochs=args.epochs, l2=args.l2, seed=1)

    sides: Dict[str, Callable[[], None]] = {
        "full_batch": lambda: full.step(x, targets),
        "full_batch_floor": floor_of(x),
        "minibatch": lambda: mini.step(xb, tb),
        "minibatch_floor": floor_of(xb),
        "train_epoch": train_epochs,
    }
    times: Dict[str, List[float]] = {name: [] for name in sides}
    for r in range(args.warmup + args.rounds):
        for name, fn in sides.items():
            t0 = time.perf_counter()
            fn()
            elapsed = time.perf_counter() - t0
            if r >= args.warmup:
                times[name].append(elapsed)

    full_ms, full_floor = _median_ms(times["full_batch"]), _median_ms(times["full_batch_floor"])
    mini_ms, mini_floor = _median_ms(times["minibatch"]), _median_ms(times["minibatch_floor"])
    per_iteration = round(statistics.median(times["train_epoch"]) * 1e3 / (args.epochs * steps_per_epoch), 4)
    result = {
        "step": f"full batch: one SGD step on all {n} samples",
        "iteration_ms": full_ms,
        "floor_ms": full_floor,
        "ratio": round(full_ms / full_floor, 3),
        "target_ratio": 3.0,
        "minibatch": {"batch_size": batch, "iteration_ms": mini_ms, "floor_ms": mini_floor,
                      "ratio": round(mini_ms / mini_floor, 3)},
        "train_epoch": {"epochs": args.epochs, "steps_per_epoch": steps_per_epoch,
                        "per_iteration_ms": per_iteration,
                        "ratio_to_minibatch_floor": round(per_iteration / mini_floor, 3),
                        "note": "train() end to end (checks, normalization, split, per-epoch shuffle "
                                "and loss/accuracy pass) divided by its steps"},
        "problem": {"classes": k, "samples": n, "dim": d, "l2": args.l2, "dtype": "float32"},
        "rounds": args.rounds,
        "blas_threads": args.threads or "default",
        "numpy": np.__version__,
    }
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
