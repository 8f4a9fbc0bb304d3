"""One place that finds the TFLite interpreter and loads the Edge TPU delegate.

Coral's Debian packages install ``tflite_runtime`` on boards; everywhere else the
maintained ``ai_edge_litert`` wheel is used. Everything that creates an
interpreter goes through here so the choice, and its error message, is made once.
"""
from __future__ import annotations

import ctypes.util
import logging
import platform
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Callable, Mapping, Optional

from .errors import DelegateLoadError, RuntimeMissingError

log = logging.getLogger(__name__)

EDGETPU_CUSTOM_OP = "edgetpu-custom-op"


def edgetpu_library_name() -> str:
    """The file name libedgetpu has on this platform."""
    return {
        "Linux": "libedgetpu.so.1",
        "Darwin": "libedgetpu.1.dylib",
        "Windows": "edgetpu.dll",
    }.get(platform.system(), "libedgetpu.so.1")


@dataclass(frozen=True)
class Runtime:
    """The interpreter class and delegate loader of one TFLite runtime package."""

    name: str
    interpreter_class: type
    load_delegate: Callable[..., Any]


@lru_cache(maxsize=1)
def find_runtime() -> Runtime:
    """Return ``tflite_runtime`` when importable, else ``ai_edge_litert``.

    Raises:
        RuntimeMissingError: neither package can be imported.
    """
    try:
        from tflite_runtime import interpreter as tflite_interpreter  # type: ignore

        return Runtime("tflite_runtime", tflite_interpreter.Interpreter, tflite_interpreter.load_delegate)
    except ImportError:
        pass
    try:
        from ai_edge_litert import interpreter as litert_interpreter

        return Runtime("ai_edge_litert", litert_interpreter.Interpreter, litert_interpreter.load_delegate)
    except ImportError as exc:
        raise RuntimeMissingError(
            "No TensorFlow Lite runtime found: install 'ai-edge-litert' (pip install ai-edge-litert) "
            "or Coral's 'python3-tflite-runtime' Debian package, which provides 'tflite_runtime'"
        ) from exc


def load_edgetpu_delegate(device: str = "", options: Optional[Mapping[str, str]] = None) -> Any:
    """Load libedgetpu as a TFLite delegate bound to ``device`` (``usb:0``, ``pci``, ...).

    Raises:
        RuntimeMissingError: libedgetpu is not installed on this host.
        DelegateLoadError: the library loaded but the device is absent or busy.
    """
    library = edgetpu_library_name()
    opts = {str(k): str(v) for k, v in (options or {}).items()}
    if device:
        opts["device"] = device
    if ctypes.util.find_library("edgetpu") is None:
        try:
            ctypes.CDLL(library)
        except OSError as exc:
            raise RuntimeMissingError(
                f"The Edge TPU runtime {library} is not installed: install Coral's 'libedgetpu1-std' "
                "(or 'libedgetpu1-max') Debian package, or run with --device cpu or --device mock"
            ) from exc
    try:
        return find_runtime().load_delegate(library, opts)
    except (ValueError, OSError, RuntimeError) as exc:
        where = device or "the first Edge TPU"
        raise DelegateLoadError(
            f"Failed to load delegate from {library} for {where}: {exc}. "
            "Check that the device is attached and not held by another process"
        ) from exc
