"""Labeled image sets for the k-shot benchmark, embedded once by the real extractor and cached.

Two sets that need nothing from the network:

- ``digits``: the 8x8 gray digit images scikit-learn ships (1797 images, 10 classes,
  174-183 a class), pixel values 0..16 scaled to 0..255 and enlarged to the
  extractor's 224x224 RGB input (bilinear, the gray copied into three channels);
- ``crops``: each Coral test photo a class, ``per_class`` augmented views of it
  (a random patch of 2-10 % of the area at an aspect of 3:4 to 4:3, a mirror half
  of the time, brightness, contrast and saturation each scaled by 0.7-1.3), seeded,
  so the same arguments give the same images. Train and test views of a class come
  from the same photo, so they overlap: an easier task than new photos would be.

Embedding is in-process (``load_model`` of the extractor's CPU twin, ai-edge-litert
on the CPU), which is the extractor's own arithmetic without the daemon's round
trips, and much faster than sending thousands of images through the daemon. The
embeddings go to a ``.npz`` named by the extractor file's SHA-256 and the set's
parameters, so a changed model or recipe never reuses a stale cache.
"""
from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, List, Optional, Tuple

import numpy as np
from PIL import Image, ImageEnhance

#: The Coral test photos, one class each (as tests/learn_photos.py lists them).
PHOTOS = ("cat.bmp", "bird.bmp", "parrot.jpg", "sunflower.bmp", "dragonfly.bmp", "grace_hopper.bmp", "owl.jpg",
          "hot_dog.jpg", "face.jpg", "pets.jpg", "kite_and_cold.jpg")
#: Bump when the way images are made changes, so old caches are not reused.
RECIPE_VERSION = 2
INPUT_SIZE = 224
#: The fraction of a photo's area a crop covers, and the color jitter (see ``augmented_view``).
#: Small patches: with crops of 25-100 % of the area every method scores 1.000 at every k
#: (measured), so the table would tell nothing; 2-10 % gives imprinting about 0.6 at k = 1.
CROP_AREA = (0.02, 0.1)
JITTER = 0.3


@dataclass
class EmbeddedSet:
    """Raw (dequantized, not normalized) embeddings ``[N, D]`` with their class index ``[N]``."""

    name: str
    embeddings: np.ndarray
    labels: np.ndarray
    class_names: List[str]
    embed_s: float  # time spent embedding (0 when read from the cache)
    cached: bool


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def load_digits_images() -> Tuple[Iterator[np.ndarray], np.ndarray, List[str], int]:
    """The scikit-learn digits as 224x224x3 uint8 images (lazily), their labels, class names and count.

    Raises:
        SystemExit: scikit-learn is not installed (it ships the digit images).
    """
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise SystemExit("bench_kshot: the 'digits' set needs the scikit-learn package (it ships the images, "
                         "sklearn.datasets.load_digits): .venv/bin/pip install scikit-learn, or run with "
                         "--sets crops") from None
    digits = load_digits()
    images = np.clip(np.asarray(digits.images) * (255.0 / 16.0), 0, 255).round().astype(np.uint8)

    def enlarge() -> Iterator[np.ndarray]:
        for small in images:
            big = Image.fromarray(small, "L").resize((INPUT_SIZE, INPUT_SIZE), Image.BILINEAR)
            yield np.asarray(big.convert("RGB"))
    return enlarge(), np.asarray(digits.target, np.int64), [str(d) for d in range(10)], len(images)


def augmented_view(photo: Image.Image, rng: np.random.Generator, area: Tuple[float, float] = CROP_AREA,
                   jitter: float = JITTER) -> np.ndarray:
    """One random crop (a fraction ``area`` of the photo, aspect 3:4..4:3), maybe mirrored, color-jittered, at 224x224."""
    width, height = photo.size
    for _ in range(20):
        area_px = rng.uniform(*area) * width * height
        aspect = float(np.exp(rng.uniform(np.log(3 / 4), np.log(4 / 3))))
        w, h = int(round(np.sqrt(area_px * aspect))), int(round(np.sqrt(area_px / aspect)))
        if 0 < w <= width and 0 < h <= height:
            break
    else:
        w, h = width, height
    x, y = int(rng.integers(0, width - w + 1)), int(rng.integers(0, height - h + 1))
    view = photo.crop((x, y, x + w, y + h)).resize((INPUT_SIZE, INPUT_SIZE), Image.BILINEAR)
    if rng.random() < 0.5:
        view = view.transpose(Image.FLIP_LEFT_RIGHT)
    for enhance in (ImageEnhance.Brightness, ImageEnhance.Contrast, ImageEnhance.Color):
        view = enhance(view).enhance(float(rng.uniform(1 - jitter, 1 + jitter)))
    return np.asarray(view)


def load_crop_images(data: Path, per_class: int, seed: int, area: Tuple[float, float] = CROP_AREA,
                     jitter: float = JITTER) -> Tuple[Iterator[np.ndarray], np.ndarray, List[str], int]:
    """``per_class`` augmented views of each test photo (lazily), their labels, class names and count."""
    photos = [Image.open(data / name).convert("RGB") for name in PHOTOS]

    def views() -> Iterator[np.ndarray]:
        for index, photo in enumerate(photos):
            rng = np.random.default_rng([seed, index])
            for _ in range(per_class):
                yield augmented_view(photo, rng, area, jitter)
    labels = np.repeat(np.arange(len(PHOTOS)), per_class)
    return views(), labels, [Path(name).stem for name in PHOTOS], len(labels)


def embed_set(name: str, make: Callable[[], Tuple[Iterator[np.ndarray], np.ndarray, List[str], int]],
              params: dict, extractor: Path, extractor_hash: str, cache_dir: Optional[Path],
              progress: Callable[[str], None]) -> EmbeddedSet:
    """Embed a set with the extractor in-process, or read it from the cache made for this extractor and recipe."""
    key = hashlib.sha256(json.dumps({**params, "recipe": RECIPE_VERSION}, sort_keys=True).encode()).hexdigest()
    cache = cache_dir / f"{name}-{extractor_hash[:16]}-{key[:12]}.npz" if cache_dir is not None else None
    if cache is not None and cache.is_file():
        with np.load(cache, allow_pickle=False) as z:
            return EmbeddedSet(name, z["embeddings"], z["labels"], [str(c) for c in z["class_names"]], 0.0, True)
    from edgetpud.daemon.model import load_model

    images, labels, class_names, count = make()
    session = load_model(extractor, task="embed")
    rows: List[np.ndarray] = []
    start = time.perf_counter()
    try:
        for i, image in enumerate(images):
            rows.append(np.asarray(session.embed(image), np.float32).reshape(-1))
            if (i + 1) % 500 == 0 or i + 1 == count:
                progress(f"{name}: embedded {i + 1}/{count} ({(time.perf_counter() - start) / (i + 1) * 1e3:.1f} ms each)")
    finally:
        session.close()
    embed_s = time.perf_counter() - start
    embeddings = np.stack(rows)
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        partial = cache.with_suffix(".partial.npz")
        np.savez(partial, embeddings=embeddings, labels=labels, class_names=np.asarray(class_names))
        partial.replace(cache)
    return EmbeddedSet(name, embeddings, labels, class_names, embed_s, False)
