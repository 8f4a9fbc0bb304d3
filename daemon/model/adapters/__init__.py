"""Turn a model's output tensors into answers: one module per task, as pycoral's adapters are.

``classification`` (classes), ``detection`` (objects of an SSD postprocess),
``embedding`` (feature vectors), ``raw`` (named tensors in and out); ``common``
dequantizes and checks options. They need only the output arrays and their
``TensorSpec`` (scale and zero point), never an interpreter, so the daemon runs
them in its main process while the invocation itself happens in a device worker.
"""
from __future__ import annotations

from edgetpud.daemon.results import BBox

from .classification import Class, classify
from .common import check_outputs, check_top_k, dequantize
from .detection import DETECTION_POSTPROCESS_OP, DetectedObject, DetectionLayout, detect, detection_layout
from .embedding import embed
from .raw import raw_inputs, raw_outputs

__all__ = [
    "BBox", "Class", "DETECTION_POSTPROCESS_OP", "DetectedObject", "DetectionLayout", "check_outputs",
    "check_top_k", "classify", "dequantize", "detect", "detection_layout", "embed", "raw_inputs", "raw_outputs",
]
