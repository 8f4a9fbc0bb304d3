"""The mock as a device backend: registered like any other, chosen by ``--device mock[:N]``.

It plugs in where real hardware does: its devices sit on a simulated pyusb bus
(``usb_backend.py``) that hal's own USB code enumerates, each with a fake apex
sysfs node (``sysfs.py``) for temperature, and its workers run the CPU twin
through ``MockTpuExecutor``. The world they share lives in a state folder
(``state.py``), so faults queued from any process reach the worker that runs
the next invocation.
"""
from __future__ import annotations

import logging
import shutil
import tempfile
from pathlib import Path
from typing import Any, List, Optional, Sequence, Union

from edgetpud.hal.backend import Backend, Found, WorkerConfig
from edgetpud.hal.pcie import apex_node_dir
from edgetpud.hal.spec import DeviceSpec
from edgetpud.hal.usb import find_usb_accelerators

from .control import MockControl
from .executor import MockTpuExecutor
from .state import MockWorld
from .usb_backend import MockUsbBackend

log = logging.getLogger(__name__)


def _count(specs: Sequence[DeviceSpec]) -> int:
    return next((s.index or 1 for s in specs if s.kind == MockBackend.name), 1)


class MockBackend(Backend):
    """``mock[:N]``: N simulated accelerators, ``mock:0`` .. ``mock:N-1``, on ports 1..N of bus 1.

    ``state_dir`` is the world's folder (None: a temporary one, removed on stop);
    ``latency_s`` the simulated invoke time (None: as fast as the CPU), which
    ``MockControl.set_latency`` overrides per device.
    """

    name = "mock"
    spec_number = "count"
    exclusive = True
    order = 30

    def __init__(self, state_dir: Union[str, Path, None] = None, latency_s: Optional[float] = None) -> None:
        self.state_dir: Optional[str] = str(state_dir) if state_dir else None
        self.latency_s = latency_s
        self._own_state_dir = False
        self._world: Optional[MockWorld] = None
        self._bus: Optional[MockUsbBackend] = None

    def start(self, specs: Sequence[DeviceSpec]) -> None:
        """Lay out a fresh world: every start begins with healthy devices and no queued faults."""
        if self.state_dir is None:
            self.state_dir = tempfile.mkdtemp(prefix="edgetpud-mock-")
            self._own_state_dir = True
        count = _count(specs)
        self._world = MockWorld.create(self.state_dir, count)
        self._bus = MockUsbBackend.from_world(self._world)
        log.warning("running on %d MOCK device(s), state in %s", count, self.state_dir)

    def stop(self) -> None:
        if self._own_state_dir and self.state_dir:
            shutil.rmtree(self.state_dir, ignore_errors=True)

    def scan(self) -> List[Found]:
        if self._world is None:
            return []
        found = []
        for i, acc in enumerate(find_usb_accelerators(self._bus)):
            index = acc.ports[0] - 1 if acc.ports else i  # mock:i sits on port i+1 (see usb_backend)
            found.append(Found(f"mock:{index}", self.name, index, acc.path, usb=acc,
                               sysfs_dir=apex_node_dir(index, self._world.sysfs_root)))
        return found

    def placeholders(self, spec: DeviceSpec) -> List[Found]:
        """All N devices, at their ports: one unplugged at start is listed as lost."""
        return [Found(f"mock:{i}", self.name, i, f"1-{i + 1}") for i in range(spec.index or 1)]

    def worker_config(self, found: Found, num_threads: Optional[int], log_level: int) -> WorkerConfig:
        options = (("state_dir", self.state_dir), ("latency_s", self.latency_s))
        return WorkerConfig(found.id, self.name, options, num_threads, log_level)

    def fault_control(self) -> Optional[MockControl]:
        return MockControl(self.state_dir) if self.state_dir is not None else None

    @classmethod
    def open_executor(cls, model_path: Any, cpu_twin_path: Any = None, *, delegate: Any = None,
                      device_id: str = "", num_threads: Optional[int] = None,
                      state_dir: Union[str, Path, None] = None, latency_s: Optional[float] = None) -> MockTpuExecutor:
        """The CPU twin through ``MockTpuExecutor`` (no world without ``state_dir``: no unplug, no faults)."""
        twin = cpu_twin_path if cpu_twin_path is not None else model_path
        return MockTpuExecutor(twin, device_id=device_id or "mock:0", state_dir=state_dir,
                               latency_s=latency_s, num_threads=num_threads)
