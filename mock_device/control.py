"""Fault injection into a running mock world: the API the daemon exposes in mock mode only.

``MockControl`` writes the shared state directory (see ``state.py``), so it works
from the daemon process, a test process or a gRPC handler alike; the pool's
discovery and the device workers pick the change up on their next look.

    ctl = pool.fault_control               # or MockControl(state_dir) from any process
    ctl.inject("mock:0", "abort")          # next invocation aborts its worker (SIGABRT)
    ctl.unplug("mock:1"); ctl.replug("mock:1")
    ctl.set_temperature("mock:0", 91.0)    # crosses trip points 0 and 1 -> throttle level 2
    ctl.set_latency("mock:0", 0.005)       # 5 ms per invocation
"""
from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any, Dict, List, Optional, Union

from edgetpud.hal.pcie import read_telemetry

from .state import FAULTS, MockWorld
from .sysfs import FakeSysfs

log = logging.getLogger(__name__)


class MockControl:
    """Drive the mock devices of one state directory.

    Raises (every method):
        KeyError: no such mock device.
        ValueError: an unknown fault or a bad value.
    """

    def __init__(self, state_dir: Union[str, Path]) -> None:
        self.world = MockWorld(state_dir)
        self.sysfs = FakeSysfs(self.world.sysfs_root)

    @staticmethod
    def _index(device_id: str) -> int:
        kind, _, number = device_id.partition(":")
        if kind != "mock" or not number.isdigit():
            raise KeyError(f"{device_id!r} is not a mock device id (mock:N)")
        return int(number)

    def devices(self) -> List[Dict[str, Any]]:
        """The world as JSON-ready dicts: id, plugged, latency_s, faults, temperature_c."""
        result = []
        for device_id in self.world.device_ids():
            state = self.world.read(device_id)
            telemetry = read_telemetry(self.sysfs.node_dir(self._index(device_id)))
            result.append({"id": device_id, "plugged": bool(state.get("plugged", True)),
                           "latency_s": state.get("latency_s"), "faults": list(state.get("faults", [])),
                           "temperature_c": telemetry.temperature_c})
        return result

    def inject(self, device_id: str, fault: str, count: int = 1, **params: Any) -> None:
        """Queue ``count`` faults for the device's next invocations.

        Faults: ``abort`` (the worker dies with SIGABRT mid-invoke, as libedgetpu does on a
        transfer error; ``after_s``), ``hang`` (blocks ``seconds``, default an hour, until the
        watchdog kills it), ``error`` (DeviceIOError; ``message``), ``timeout``
        (DeviceTimeoutError after ``seconds``).
        """
        if fault not in FAULTS:
            raise ValueError(f"unknown fault {fault!r}: one of {', '.join(FAULTS)}")
        if count < 1:
            raise ValueError("count must be >= 1")
        for name in ("seconds", "after_s"):
            value = params.get(name)
            if value is not None and not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
        entry = {"fault": fault, **params}
        self.world.update(device_id, lambda s: s["faults"].extend([dict(entry) for _ in range(count)]))
        log.info("mock %s: %d x %s queued", device_id, count, fault)

    def clear_faults(self, device_id: str) -> None:
        self.world.update(device_id, lambda s: s["faults"].clear())

    def unplug(self, device_id: str) -> None:
        """Pull the device: discovery marks it lost; a worker invoking on it aborts."""
        self.world.update(device_id, lambda s: s.__setitem__("plugged", False))

    def replug(self, device_id: str) -> None:
        """Plug it back: the next rescan takes it back into service."""
        self.world.update(device_id, lambda s: s.__setitem__("plugged", True))

    def set_latency(self, device_id: str, latency_s: Optional[float]) -> None:
        """Fixed invoke time in seconds (None: the backend's ``latency_s``)."""
        if latency_s is not None and not (math.isfinite(latency_s) and latency_s >= 0):
            raise ValueError(f"latency must be a finite number of seconds >= 0, got {latency_s!r}")
        self.world.update(device_id, lambda s: s.__setitem__("latency_s", latency_s))

    def set_temperature(self, device_id: str, temperature_c: float) -> None:
        """Write the die temperature the pool's telemetry poll will read."""
        if not math.isfinite(temperature_c):
            raise ValueError(f"temperature must be a finite number of degrees Celsius, got {temperature_c!r}")
        index = self._index(device_id)
        self.world.read(device_id)  # KeyError for an unknown device
        self.sysfs.set_temperature(index, float(temperature_c))
