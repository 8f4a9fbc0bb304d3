"""The model layer: a plain library for reading models and running them in-process.

``load_model(path, device="cpu")`` is the public entry point; everything else here
is what the daemon composes (bundles, sessions, adapters, the .tflite reader).
"""
from __future__ import annotations

from typing import Any

from .adapters import Class, DetectedObject
from .bundle import ModelBundle
from .session import ModelSession, load_model

__all__ = ["Class", "DetectedObject", "ModelBundle", "ModelSession", "TfliteModel", "load_model"]


def __getattr__(name: str) -> Any:
    # TfliteModel is imported on first use: the schema module is large and most callers never need it.
    if name == "TfliteModel":
        from .tflite import TfliteModel

        return TfliteModel
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
