"""What the USB and PCIe backends share: an Edge TPU driven through the libedgetpu delegate."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Optional

from ..backend import Backend, Found, WorkerConfig
from ..errors import DeviceInitError
from ..executor import TfliteExecutor
from ..runtime import load_edgetpu_delegate

if TYPE_CHECKING:  # pragma: no cover
    from ..executor import Executor, ModelSource


class EdgeTpuBackend(Backend):
    """A transport whose devices run compiled models through libedgetpu.

    ``executor_backend`` names another backend whose executors the workers open
    instead (a test rig: the devices are found on a simulated bus or sysfs tree,
    and run the simulator's CPU-twin executor, since libedgetpu is absent); None
    is libedgetpu.
    """

    def __init__(self, executor_backend: Optional[str] = None) -> None:
        if executor_backend is not None:
            from . import backend_class

            backend_class(executor_backend)  # an unknown name is refused now, not in every worker
        self.executor_backend = executor_backend

    def worker_config(self, found: Found, num_threads: Optional[int], log_level: int) -> WorkerConfig:
        if self.executor_backend is not None:
            return WorkerConfig(found.id, self.executor_backend, (), num_threads, log_level)
        return WorkerConfig(found.id, self.name, (("delegate_device", found.delegate_device),), num_threads, log_level)

    @classmethod
    def open_executor(cls, model_path: "ModelSource", cpu_twin_path: Optional["ModelSource"] = None, *,
                      delegate: Any = None, device_id: str = "", num_threads: Optional[int] = None,
                      **options: Any) -> "Executor":
        """The compiled model with ``delegate``, the libedgetpu delegate the caller loaded for the device."""
        if options:
            raise TypeError(f"{cls.name} executors take no option(s) {sorted(options)}")
        if delegate is None:
            raise DeviceInitError(f"{device_id or cls.name}: an Edge TPU executor needs the libedgetpu delegate")
        return TfliteExecutor(model_path, delegates=[delegate], num_threads=num_threads)

    @classmethod
    def open_executors(cls, config: WorkerConfig) -> "_Delegated":
        return _Delegated(cls, config)


class _Delegated:
    """Loads the delegate once per worker: libedgetpu opens the device when it is created."""

    def __init__(self, backend: type, config: WorkerConfig) -> None:
        self._backend = backend
        self._config = config
        self.delegate = load_edgetpu_delegate(dict(config.options).get("delegate_device", ""))

    def open(self, model_path: str, cpu_twin_path: Optional[str]) -> "Executor":
        cfg = self._config
        return self._backend.open_executor(model_path, cpu_twin_path, delegate=self.delegate,
                                           device_id=cfg.device_id, num_threads=cfg.num_threads)

    def close(self) -> None:
        self.delegate = None
