"""On-device retraining of a model's last layer: plain libraries (NumPy, SQLite), no gRPC, no processes.

- ``head``: ``LinearHead``, the one type every learned last layer is (logits = x·W + b).
- ``imprinting``: weight imprinting from running per-class sums, with calibration
  against a classifier's pretrained classes.
- ``softmax_regression``: last-layer backpropagation (mini-batch SGD, L2 in the gradient).
- ``split``: find a classifier's head and cut the model at the head's input.
- ``export``: append a head to the base as quantized TFLite ops.
- ``store``: samples and head versions in SQLite under the state folder.
"""
from __future__ import annotations

from .head import SOURCES, LinearHead, softmax
from .imprinting import DEFAULT_SCALE, MAX_SAMPLES_PER_CLASS, ClassSums, Imprinter, imprint_head
from .softmax_regression import Progress, TrainResult, train

__all__ = ["DEFAULT_SCALE", "MAX_SAMPLES_PER_CLASS", "SOURCES", "ClassSums", "Imprinter", "LinearHead",
           "Progress", "TrainResult", "imprint_head", "softmax", "train"]
