#!/usr/bin/env python3
"""A k-shot table: imprinting against last-layer backprop on real images through the real extractor.

Coral's guidance is that weight imprinting is ahead with few samples a class and
last-layer backpropagation with many. This measures it on two labeled sets that
need nothing from the network (see ``_kshot_sets.py``): the scikit-learn digits
enlarged to 224x224 RGB, and small augmented patches of the Coral test photos, one
class a photo. Every image is embedded once by the Coral embedding extractor
(``mobilenet_v1_1.0_224_quant_embedding_extractor.tflite``) in-process on the CPU
(``load_model``; the same model arithmetic as the daemon's mock device, without
thousands of round trips) and cached in a ``.npz`` keyed by the extractor's hash.

For each seed (0..4) each class is shuffled; its first ``test`` images are the
held-out test set and the first k of the rest the training samples (so k = 5
holds the k = 2 samples). A set covers the k of 1, 2, 5, 10, 20, 50, 100, 200 it
has enough images for beside its test set. Methods, all with
``edgetpud.daemon.learn`` and scored by top-1 accuracy on the test set:

    imprinting        imprint_head (normalized mean of normalized embeddings, scale 10)
    backprop          softmax_regression.train from zeros at its defaults (what
                      ``edgetpuctl train`` does untuned): lr 8, batch 32, 1500 SGD
                      iterations, l2 1e-5, no validation split, on L2-normalized
                      embeddings (chosen once on seed 99's split, not per k or per set)
    backprop_warm     the same, started from the imprinted head

Prints one JSON document (the table, mean, std and min-max over the seeds, and
where backprop overtakes imprinting) and a markdown table on stderr.

Usage: .venv/bin/python scripts/bench/bench_kshot.py [--sets digits,crops] [--seeds 5]
           [--crops-per-class 250] [--cache-dir DIR | --no-cache]
"""
from __future__ import annotations

import os

for _name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):  # before NumPy loads: a shared host
    os.environ.setdefault(_name, "1")

import argparse  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _daemon import test_data_dir  # noqa: E402
from _kshot_sets import (CROP_AREA, JITTER, EmbeddedSet, embed_set, file_sha256, load_crop_images,  # noqa: E402
                         load_digits_images)
from _learn_daemon import EXTRACTOR_FILE  # noqa: E402

from edgetpud.daemon.learn import softmax_regression  # noqa: E402
from edgetpud.daemon.learn.head import LinearHead  # noqa: E402
from edgetpud.daemon.learn.imprinting import DEFAULT_SCALE, imprint_head, imprinted_classes  # noqa: E402

KS = (1, 2, 5, 10, 20, 50, 100, 200)
METHODS = ("imprinting", "backprop", "backprop_warm")
#: The engine's defaults, spelled out for the report.
BACKPROP = {"learning_rate": softmax_regression.DEFAULT_LEARNING_RATE,
            "batch_size": softmax_regression.DEFAULT_BATCH_SIZE,
            "iterations": softmax_regression.DEFAULT_ITERATIONS, "l2": softmax_regression.DEFAULT_L2}
#: Digits: the smallest class has 174 images; 74 held out leaves 100 for training (k <= 100).
DIGITS_TEST_PER_CLASS = 74
CROPS_TEST_PER_CLASS = 50


def split(data: EmbeddedSet, test_per_class: int, seed: int) -> Tuple[List[np.ndarray], np.ndarray]:
    """Per class, its training pool in a seeded order; and the indices of the held-out test set."""
    rng = np.random.default_rng(seed)
    pools: List[np.ndarray] = []
    test: List[np.ndarray] = []
    for c in range(len(data.class_names)):
        order = rng.permutation(np.flatnonzero(data.labels == c))
        test.append(order[:test_per_class])
        pools.append(order[test_per_class:])
    return pools, np.concatenate(test)


def accuracy(head: LinearHead, x: np.ndarray, y: np.ndarray) -> float:
    return float(np.mean(np.argmax(head.logits(x), axis=1) == y))


def run_methods(x: np.ndarray, y: np.ndarray, names: Sequence[str], seed: int,
                x_test: np.ndarray, y_test: np.ndarray) -> Dict[str, float]:
    """Test accuracy of each method trained on ``x`` (raw embeddings) with class indices ``y``."""
    labels = [names[i] for i in y]
    imprinted = imprint_head(imprinted_classes({names[c]: x[y == c] for c in range(len(names))}, x.shape[1]))
    heads = {
        "imprinting": imprinted,
        "backprop": softmax_regression.train(x, labels, classes=names, seed=seed, **BACKPROP).head,
        "backprop_warm": softmax_regression.train(x, labels, classes=names, seed=seed, warm_start=imprinted,
                                                  **BACKPROP).head,
    }
    return {method: accuracy(head, x_test, y_test) for method, head in heads.items()}


def summary(values: List[float]) -> Dict[str, Any]:
    return {"mean": round(statistics.fmean(values), 4),
            "std": round(statistics.stdev(values), 4) if len(values) > 1 else 0.0,
            "min": round(min(values), 4), "max": round(max(values), 4), "per_seed": [round(v, 4) for v in values]}


def verdict(rows: List[Dict[str, Any]], method: str) -> Dict[str, Any]:
    """Where ``method`` stands against imprinting over k: ahead (by mean), behind, and where it overtakes for good."""
    ks = [row["k"] for row in rows]
    gap = [row[method]["mean"] - row["imprinting"]["mean"] for row in rows]
    ahead_from: Optional[int] = None
    for i in range(len(ks) - 1, -1, -1):  # the smallest k from which it is ahead at every larger k
        if gap[i] <= 0:
            break
        ahead_from = ks[i]
    imprinting_ahead = [k for k, g in zip(ks, gap) if g < 0]
    holds = bool(gap) and gap[0] < 0 and gap[-1] > 0
    return {"minus_imprinting_by_k": {str(k): round(g, 4) for k, g in zip(ks, gap)},
            "imprinting_ahead_at_k": imprinting_ahead, "ahead_of_imprinting_from_k": ahead_from,
            "guidance_holds": holds}


def markdown(name: str, rows: List[Dict[str, Any]]) -> str:
    lines = [f"\n{name}: test accuracy, mean ± std (min–max) over the seeds",
             "| k | " + " | ".join(METHODS) + " |", "|---:|" + "---|" * len(METHODS)]
    for row in rows:
        cells = [f"{row[m]['mean']:.3f} ± {row[m]['std']:.3f} ({row[m]['min']:.3f}–{row[m]['max']:.3f})"
                 for m in METHODS]
        lines.append(f"| {row['k']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--sets", default="digits,crops", help="comma-separated: digits, crops")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--crops-per-class", type=int, default=250,
                        help=f"augmented patches a photo ({CROPS_TEST_PER_CLASS} held out, the rest for k)")
    default_cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "edgetpud" / "bench_kshot"
    parser.add_argument("--cache-dir", type=Path, default=default_cache, help=f"default {default_cache}")
    parser.add_argument("--no-cache", action="store_true", help="embed everything again and write no cache")
    args = parser.parse_args()
    sets = [s.strip() for s in args.sets.split(",") if s.strip()]
    unknown = sorted(set(sets) - {"digits", "crops"})
    if unknown or not sets:
        parser.error(f"--sets takes digits and/or crops, got {args.sets!r}")
    if args.seeds < 1 or args.crops_per_class <= CROPS_TEST_PER_CLASS:
        parser.error(f"--seeds must be >= 1 and --crops-per-class > {CROPS_TEST_PER_CLASS}")
    if "digits" in sets:
        try:  # fail before anything is embedded, naming the package
            import sklearn  # noqa: F401
        except ImportError:
            raise SystemExit("bench_kshot: the 'digits' set needs the scikit-learn package (it ships the digit "
                             "images, sklearn.datasets.load_digits): .venv/bin/pip install scikit-learn, "
                             "or run with --sets crops") from None
    started = time.perf_counter()
    data = test_data_dir()
    extractor = data / EXTRACTOR_FILE
    extractor_hash = file_sha256(extractor)
    cache_dir = None if args.no_cache else args.cache_dir

    def say(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    makers: Dict[str, Tuple[Callable[[], Any], Dict[str, Any], int]] = {
        "digits": (load_digits_images, {"set": "digits"}, DIGITS_TEST_PER_CLASS),
        "crops": (lambda: load_crop_images(data, args.crops_per_class, 0),
                  {"set": "crops", "per_class": args.crops_per_class, "seed": 0, "area": list(CROP_AREA),
                   "jitter": JITTER}, CROPS_TEST_PER_CLASS),
    }
    report: Dict[str, Any] = {}
    embed_s = train_s = 0.0
    embedded_images = 0
    for name in sets:
        make, params, test_per_class = makers[name]
        embedded = embed_set(name, make, params, extractor, extractor_hash, cache_dir, say)
        if not embedded.cached:
            embed_s += embedded.embed_s
            embedded_images += len(embedded.labels)
        counts = np.bincount(embedded.labels)
        pool = int(counts.min()) - test_per_class
        ks = [k for k in KS if k <= pool]
        names = embedded.class_names
        train_started = time.perf_counter()
        per_k: Dict[int, Dict[str, List[float]]] = {k: {m: [] for m in METHODS} for k in ks}
        for seed in range(args.seeds):
            pools, test = split(embedded, test_per_class, seed)
            x_test, y_test = embedded.embeddings[test], embedded.labels[test]
            for k in ks:
                chosen = np.concatenate([p[:k] for p in pools])
                scores = run_methods(embedded.embeddings[chosen], embedded.labels[chosen], names, seed,
                                     x_test, y_test)
                for method, value in scores.items():
                    per_k[k][method].append(value)
            say(f"{name}: seed {seed} done ({time.perf_counter() - train_started:.0f} s)")
        train_s += time.perf_counter() - train_started
        rows = [{"k": k, **{m: summary(per_k[k][m]) for m in METHODS}} for k in ks]
        report[name] = {
            "images": int(len(embedded.labels)), "classes": len(names), "class_names": names,
            "images_per_class": [int(c) for c in counts], "test_per_class": test_per_class,
            "k_covered": ks, "k_not_covered": [k for k in KS if k not in ks],
            "embeddings_from_cache": embedded.cached, "table": rows,
            "backprop_vs_imprinting": verdict(rows, "backprop"),
            "backprop_warm_vs_imprinting": verdict(rows, "backprop_warm"),
        }
        say(markdown(name, rows))
    print(json.dumps({
        "benchmark": "kshot", "extractor": EXTRACTOR_FILE, "extractor_sha256": extractor_hash,
        "embedding": "in-process on the CPU (edgetpud.daemon.model.load_model, ai-edge-litert), raw float "
                     "embedding; not through the daemon",
        "embed_ms_per_image": round(embed_s / embedded_images * 1000, 2) if embedded_images else None,
        "seeds": list(range(args.seeds)), "metric": "top-1 accuracy on the held-out test images",
        "methods": {
            "imprinting": {"scale": DEFAULT_SCALE},
            "backprop": {**BACKPROP, "start": "zeros", "features": "L2-normalized embeddings",
                         "chosen": "once, on seed 99's digits and crops splits (not one of the seeds reported)"},
            "backprop_warm": {**BACKPROP, "start": "the imprinted head"},
        },
        "sets": report,
        "seconds": {"embed": round(embed_s, 1), "train_and_test": round(train_s, 1),
                    "total": round(time.perf_counter() - started, 1)},
    }, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
