"""The model layer: a plain library for reading models and running them in-process.

``load_model(path, device="cpu")`` is the public entry point; everything else here
is what the daemon composes (bundles, sessions, adapters, the .tflite reader).
"""
from __future__ import annotations

from ..results import Class, DetectedObject
from .bundle import ModelBundle
from .session import ModelSession, load_model
from .tflite import TfliteModel

__all__ = ["Class", "DetectedObject", "ModelBundle", "ModelSession", "TfliteModel", "load_model"]
