"""Lay out a model bundle from the Coral test data: the one helper every test that needs a bundle uses."""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Optional

SMALL = "mobilenet_v1_0.25_128_quant"
IMAGENET_LABELS = "imagenet_labels.txt"


def make_bundle(root: Path, test_data: Path, name: str, model: str = SMALL, compiled: bool = False,
                labels: Optional[str] = IMAGENET_LABELS, toml: Optional[str] = None) -> Path:
    """The bundle folder ``root/name``: ``model``'s CPU twin, its compiled twin when ``compiled``, the
    ``labels`` file of the test data (None: none) and a ``model.toml`` of ``toml`` (None: none)."""
    folder = root / name
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(test_data / f"{model}.tflite", folder / "model.tflite")
    if compiled:
        shutil.copyfile(test_data / f"{model}_edgetpu.tflite", folder / "model_edgetpu.tflite")
    if labels is not None:
        shutil.copyfile(test_data / labels, folder / "labels.txt")
    if toml is not None:
        (folder / "model.toml").write_text(toml)
    return folder
