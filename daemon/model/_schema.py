"""Import shim for the TFLite flatbuffer schema (generated object API).

``ai_edge_litert`` ships ``schema_py_generated`` with the object API
(``ModelT.InitFromPackedBuf`` / ``Pack``); we use it so no flatbuffer is ever
parsed by hand. TensorFlow ships the same module; the ``tflite`` PyPI package is
the last resort (only its newer releases carry the object API).
"""
from __future__ import annotations

import importlib
import logging
from types import ModuleType

from ..errors import ModelError

log = logging.getLogger(__name__)

_CANDIDATES = (
    "ai_edge_litert.schema_py_generated",
    "tensorflow.lite.python.schema_py_generated",
    "tflite",
)


def _load() -> ModuleType:
    """Return the first importable schema module that has the object API.

    Raises:
        ModelError: no schema module with ``ModelT`` is importable.
    """
    for name in _CANDIDATES:
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        if hasattr(module, "ModelT") and hasattr(module, "BuiltinOperator"):
            log.debug("TFLite schema from %s", name)
            return module
    raise ModelError(
        "no TFLite flatbuffer schema with the object API is installed: "
        "install 'ai-edge-litert' (pip install ai-edge-litert)"
    )


schema = _load()
