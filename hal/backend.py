"""The interface every kind of device implements, in the manner of python-can's buses.

A backend is one transport (USB, PCIe, the CPU, or a simulator registered from
another package). The pool and discovery talk to backends only through this
class, so adding a kind of device is adding one module that subclasses
``Backend`` (see ``edgetpud.hal.backends`` for how a name finds its class).

Two halves, two processes: an instance lives in the main process (scan,
telemetry, preparing a device, the picklable ``WorkerConfig`` of a worker); the
class methods run in the device worker (``open_executors``) or in any process
that wants one executor (``open_executor``).
"""
from __future__ import annotations

import abc
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, List, Optional, Protocol, Sequence, Tuple

from .pcie import ApexTelemetry, read_telemetry

if TYPE_CHECKING:  # pragma: no cover
    from .executor import Executor, ModelSource
    from .spec import DeviceSpec
    from .usb import UsbAccelerator

log = logging.getLogger(__name__)


@dataclass
class Found:
    """A device present on the host (or promised by a spec), with the id the pool knows it by.

    ``id`` is empty while discovery has still to number it (backends whose ids
    follow the order of appearance, such as USB); ``path`` is empty for a device a
    spec pins but that was never seen.
    """

    id: str
    kind: str
    index: int
    path: str
    usb: Optional["UsbAccelerator"] = None
    sysfs_dir: Optional[Path] = None
    delegate_device: str = ""

    @property
    def key(self) -> Tuple[str, str]:
        return (self.kind, self.path)

    @property
    def needs_firmware(self) -> bool:
        """A USB accelerator still in DFU mode: its worker (or the pool) must load firmware first."""
        return self.usb is not None and self.usb.needs_firmware


@dataclass(frozen=True)
class WorkerConfig:
    """Everything a worker needs to open its device; picklable for ``spawn``.

    ``backend`` names the backend whose executors the worker opens and
    ``options`` are that backend's keyword arguments to ``open_executors``.
    """

    device_id: str
    backend: str
    options: Tuple[Tuple[str, Any], ...] = ()
    num_threads: Optional[int] = None
    log_level: int = logging.WARNING


class ExecutorFactory(Protocol):
    """What a worker holds open for its device's whole life (an Edge TPU delegate, say)."""

    def open(self, model_path: str, cpu_twin_path: Optional[str]) -> "Executor": ...

    def close(self) -> None: ...


class Backend(abc.ABC):
    """One kind of device: how to find them, what a worker opens on one, its telemetry.

    Class attributes say how discovery and ``--device`` treat the kind, so that
    neither needs to know the kind by name.
    """

    #: The spec word and id prefix (``usb`` gives ``usb[:N]`` and ``usb:0``).
    name: ClassVar[str] = ""
    #: What N in ``<name>:N`` means: "index" (that one device), "count" (N devices) or "none".
    spec_number: ClassVar[str] = "index"
    #: Scanned for ``--device auto``.
    in_auto: ClassVar[bool] = False
    #: What ``--device auto`` serves on when no other device is found.
    auto_fallback: ClassVar[bool] = False
    #: Replaces the bus: cannot be given together with other kinds.
    exclusive: ClassVar[bool] = False
    #: Ids follow the order of appearance (``usb:0`` is the first seen), not the device's own number.
    ordered_ids: ClassVar[bool] = False
    #: Where the kind's devices come in listings (lower first).
    order: ClassVar[int] = 50

    def start(self, specs: Sequence["DeviceSpec"]) -> None:
        """Prepare before the first scan (a simulator lays out its devices here)."""

    def stop(self) -> None:
        """Release what ``start`` made."""

    @abc.abstractmethod
    def scan(self) -> List[Found]:
        """Every device of this kind present right now, in enumeration order."""

    def placeholders(self, spec: "DeviceSpec") -> List[Found]:
        """Devices ``spec`` promises, for discovery to list while they are absent.

        By default a pinned ``<name>:N`` promises that one device, at no path yet.
        """
        if self.spec_number == "index" and spec.index is not None:
            return [Found(str(spec), self.name, spec.index, "")]
        return []

    def prepare(self, found: Found) -> Found:
        """Make the device ready for its worker (before every start); returns it as it is now.

        Raises:
            HalError: the device cannot be made ready.
        """
        return found

    def telemetry(self, found: Found) -> Optional[ApexTelemetry]:
        """Temperature and trip points, where the device has an apex sysfs node."""
        return read_telemetry(found.sysfs_dir) if found.sysfs_dir is not None else None

    def worker_config(self, found: Found, num_threads: Optional[int], log_level: int) -> WorkerConfig:
        """What the worker of ``found`` is told: by default, open this backend's executors."""
        return WorkerConfig(found.id, self.name, (), num_threads, log_level)

    def fault_control(self) -> Any:
        """The fault-injection interface of a simulated device bus; None on real hardware."""
        return None

    @classmethod
    @abc.abstractmethod
    def open_executor(cls, model_path: "ModelSource", cpu_twin_path: Optional["ModelSource"] = None, *,
                      delegate: Any = None, device_id: str = "", num_threads: Optional[int] = None,
                      **options: Any) -> "Executor":
        """One executor for one model on a device of this kind (any process).

        ``model_path`` is what an Edge TPU runs (the compiled file when there is
        one), ``cpu_twin_path`` the fully quantized CPU twin (default: ``model_path``).

        Raises:
            ModelRuntimeError: the runtime refuses the model.
            DeviceInitError: the device cannot run it (an Edge TPU without its delegate).
        """

    @classmethod
    def open_executors(cls, config: WorkerConfig) -> ExecutorFactory:
        """In the worker: open the device once, then executors on it as models load.

        Raises:
            RuntimeMissingError, DelegateLoadError, DeviceInitError: the device cannot be opened.
        """
        return _PerModel(cls, config)


class _PerModel:
    """An ``ExecutorFactory`` for kinds with nothing to hold open between models."""

    def __init__(self, backend: type, config: WorkerConfig) -> None:
        self._backend = backend
        self._config = config

    def open(self, model_path: str, cpu_twin_path: Optional[str]) -> "Executor":
        cfg = self._config
        return self._backend.open_executor(model_path, cpu_twin_path, device_id=cfg.device_id,
                                           num_threads=cfg.num_threads, **dict(cfg.options))

    def close(self) -> None:
        return None

