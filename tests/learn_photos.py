"""Real photos through a real base: embeddings of augmented crops, shared by the retraining tests."""
from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Tuple

import numpy as np
from ai_edge_litert.interpreter import Interpreter
from PIL import Image

from edgetpud.daemon.model import load_model

PHOTOS = ("cat.bmp", "bird.bmp", "parrot.jpg", "sunflower.bmp", "dragonfly.bmp", "grace_hopper.bmp", "owl.jpg",
          "hot_dog.jpg", "face.jpg", "pets.jpg", "kite_and_cold.jpg")
NEW_CLASSES = {"sunflower": "sunflower.bmp", "dragonfly": "dragonfly.bmp", "hot dog": "hot_dog.jpg"}
# (x, y, size) as fractions of the photo, each also mirrored: 12 crops a photo
_CROPS = ((0, 0, 1), (0.1, 0.1, 0.8), (0, 0, 0.85), (0.15, 0.15, 0.85), (0.05, 0.1, 0.9), (0.1, 0, 0.75))
TRAIN = (0, 1, 2, 3, 6, 7, 8, 9)
HELD_OUT = (4, 5, 10, 11)


class Embedder:
    """Preprocess the way the project does (the model's own session), run ``base`` bytes in ai-edge-litert."""

    def __init__(self, preprocess_model: Path, base: bytes) -> None:
        self._session = load_model(preprocess_model)
        self._it = Interpreter(model_content=base)
        self._it.allocate_tensors()
        out = self._it.get_output_details()[0]
        self._out, (self.scale, self.zero_point) = out["index"], out["quantization"]

    def quantized(self, image, roi=None) -> np.ndarray:
        (x,), _ = self._session.preprocess(image, "classify", **({"roi": roi} if roi else {}))
        self._it.set_tensor(self._it.get_input_details()[0]["index"], x)
        self._it.invoke()
        return self._it.get_tensor(self._out).reshape(-1).copy()

    def __call__(self, image, roi=None) -> np.ndarray:
        q = self.quantized(image, roi).astype(np.float32)
        return (q - self.zero_point) * self.scale if self.scale else q

    def crops(self, path: Path) -> np.ndarray:
        """``[12, D]`` embeddings of crops and mirrored crops of one photo."""
        pixels = np.asarray(Image.open(path).convert("RGB"))
        h, w = pixels.shape[:2]
        out: List[np.ndarray] = []
        for mirrored in (False, True):
            p = np.ascontiguousarray(pixels[:, ::-1]) if mirrored else pixels
            for fx, fy, fs in _CROPS:
                out.append(self(p, (int(fx * w), int(fy * h), int(fs * w), int(fs * h))))
        return np.stack(out)


def new_class_crops(embedder: Embedder, data: Path) -> Tuple[Dict[str, np.ndarray], Dict[str, np.ndarray]]:
    """(train, held-out) crops per new class."""
    crops = {label: embedder.crops(data / photo) for label, photo in NEW_CLASSES.items()}
    return ({k: v[list(TRAIN)] for k, v in crops.items()}, {k: v[list(HELD_OUT)] for k, v in crops.items()})
