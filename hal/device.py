"""What the HAL tells the rest of the daemon about one device.

``DeviceInfo`` is a plain snapshot: the pool builds a fresh one on every
``devices()`` call, so callers can keep it, compare it and serialise it without
locks. ``to_dict()`` is what ``edgetpuctl devices`` prints.
"""
from __future__ import annotations

import dataclasses
import enum
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple


class DeviceState(str, enum.Enum):
    """Life-cycle of a device as the scheduler sees it.

    ``ready``, ``busy`` (every slot in use: more requests queue) and ``throttled``
    (the clock is slowed) are in service; ``needs_firmware`` is a
    USB accelerator still in DFU mode (libedgetpu loads the firmware when its
    worker opens it); ``lost`` is unplugged; ``failed`` is a dead worker waiting
    for its restart, or a device that cannot be opened.
    """

    NEEDS_FIRMWARE = "needs_firmware"
    READY = "ready"
    BUSY = "busy"
    THROTTLED = "throttled"
    LOST = "lost"
    FAILED = "failed"

    @property
    def in_service(self) -> bool:
        return self in (DeviceState.READY, DeviceState.BUSY, DeviceState.THROTTLED)


class DeviceEvent(str, enum.Enum):
    """What ``DevicePool.on_change`` callbacks are told."""

    ADDED = "added"
    LOST = "lost"
    FAILED = "failed"          # the worker died; a restart is scheduled
    RESTARTED = "restarted"    # a new worker serves again, models reloaded
    THROTTLED = "throttled"    # the throttle level changed (up or down)
    RECOVERED = "recovered"    # a lost device came back and serves again


@dataclass
class DeviceInfo:
    """A snapshot of one device.

    ``path`` is the stable physical location: ``usb:N`` follows enumeration
    order, which changes across reboots, so USB devices also carry their bus and
    port chain (``"2-1.3"``, as Linux names it under /sys/bus/usb/devices).
    """

    id: str
    kind: str
    index: int
    path: Optional[str] = None
    state: str = DeviceState.READY.value
    temperature_c: Optional[float] = None
    throttle_level: Optional[int] = None
    models: List[str] = field(default_factory=list)
    restarts: int = 0
    usb_bus: Optional[int] = None
    usb_ports: Optional[Tuple[int, ...]] = None
    usb_address: Optional[int] = None
    vid_pid: Optional[str] = None
    usb_speed: Optional[str] = None
    trip_points_c: Optional[List[float]] = None
    error: Optional[str] = None
    pid: Optional[int] = None
    inflight: int = 0

    @property
    def in_service(self) -> bool:
        return DeviceState(self.state).in_service

    def to_dict(self) -> Dict[str, Any]:
        """A JSON-ready dict; the keys ``edgetpuctl devices`` relies on come first."""
        data = dataclasses.asdict(self)
        data["models"] = list(self.models)
        data["usb_ports"] = list(self.usb_ports) if self.usb_ports is not None else None
        return data

    def copy(self, **changes: Any) -> "DeviceInfo":
        return dataclasses.replace(self, models=list(self.models), **changes)
