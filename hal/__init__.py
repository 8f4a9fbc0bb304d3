"""edgetpud's hardware abstraction layer: devices, workers, runtime loading.

Knows nothing of the service: never imports ``edgetpud.daemon``, gRPC or protobuf.
"""
from __future__ import annotations

from .device import DeviceEvent, DeviceInfo, DeviceKind, DeviceState
from .errors import (
    DelegateLoadError,
    DeviceInitError,
    DeviceIOError,
    DeviceSpecError,
    DeviceTimeoutError,
    DeviceUnavailableError,
    HalError,
    ModelRuntimeError,
    RuntimeMissingError,
)
from .executor import Executor, TensorSpec, TfliteExecutor, check_inputs
from .supervisor import DevicePool

__all__ = [
    "DeviceEvent", "DeviceInfo", "DeviceKind", "DeviceState", "DevicePool",
    "DelegateLoadError", "DeviceInitError", "DeviceIOError", "DeviceSpecError", "DeviceTimeoutError",
    "DeviceUnavailableError", "HalError", "ModelRuntimeError", "RuntimeMissingError",
    "Executor", "TensorSpec", "TfliteExecutor", "check_inputs",
]
