"""edgetpud's hardware abstraction layer: device backends, workers, runtime loading.

Knows nothing of the service or of any one simulator: never imports
``edgetpud.daemon``, ``edgetpud.mock_device``, gRPC or protobuf
(tests/test_import_rules.py). Kinds of device are backends, found by name
(``edgetpud.hal.backends``).
"""
from __future__ import annotations

from .device import DeviceEvent, DeviceInfo, DeviceState
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
from .backend import Backend, Found, WorkerConfig
from .executor import Executor, TensorSpec, TfliteExecutor, check_inputs
from .options import PoolOptions
from .supervisor import DevicePool

__all__ = [
    "Backend", "DeviceEvent", "DeviceInfo", "DeviceState", "DevicePool", "Found", "PoolOptions",
    "WorkerConfig",
    "DelegateLoadError", "DeviceInitError", "DeviceIOError", "DeviceSpecError", "DeviceTimeoutError",
    "DeviceUnavailableError", "HalError", "ModelRuntimeError", "RuntimeMissingError",
    "Executor", "TensorSpec", "TfliteExecutor", "check_inputs",
]
