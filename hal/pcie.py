"""PCIe / M.2 Edge TPUs through the apex driver's sysfs nodes.

Every read goes under ``sysfs_root`` (``/sys`` by default) so tests point it at a
tree built by ``edgetpud.mock_device.sysfs`` instead of patching ``open``: the
real host and the tests run the same lines.
"""
from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Union

from .thermal import DEFAULT_TRIP_POINTS_C

log = logging.getLogger(__name__)

DEFAULT_SYSFS_ROOT = "/sys"
_APEX_RE = re.compile(r"^apex_(\d+)$")


@dataclass
class ApexTelemetry:
    """One reading of an apex node; values are °C, ``None`` where a file is missing."""

    temperature_c: Optional[float]
    trip_points_c: List[float]
    hw_temp_warn: Dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class ApexDevice:
    """One ``/sys/class/apex/apex_N`` node and its ``/dev/apex_N``."""

    index: int
    sysfs_dir: Path
    dev_path: str


def _read_milli_c(path: Path) -> Optional[float]:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    try:
        return int(text) / 1000.0
    except ValueError:
        log.debug("unreadable temperature %r in %s", text, path)
        return None


def apex_class_dir(sysfs_root: Union[str, Path, None] = None) -> Path:
    return Path(sysfs_root or DEFAULT_SYSFS_ROOT) / "class" / "apex"


def apex_node_dir(index: int, sysfs_root: Union[str, Path, None] = None) -> Path:
    """``<sysfs_root>/class/apex/apex_<index>``: the node of ``/dev/apex_<index>``."""
    return apex_class_dir(sysfs_root) / f"apex_{index}"


def find_apex_devices(sysfs_root: Union[str, Path, None] = None, dev_root: str = "/dev") -> List[ApexDevice]:
    """List apex nodes in index order; an absent driver gives an empty list."""
    base = apex_class_dir(sysfs_root)
    try:
        names = os.listdir(base)
    except OSError:
        return []
    found = []
    for name in names:
        match = _APEX_RE.match(name)
        if match:
            index = int(match.group(1))
            found.append(ApexDevice(index, base / name, f"{dev_root}/apex_{index}"))
    return sorted(found, key=lambda d: d.index)


def read_telemetry(sysfs_dir: Union[str, Path]) -> ApexTelemetry:
    """Read ``temp``, ``trip_point{0,1,2}_temp`` and ``hw_temp_warn*`` of one node.

    Missing trip points fall back to the driver defaults (85/90/95 °C).
    """
    node = Path(sysfs_dir)
    temperature = _read_milli_c(node / "temp")
    trips = []
    for i, default in enumerate(DEFAULT_TRIP_POINTS_C):
        value = _read_milli_c(node / f"trip_point{i}_temp")
        trips.append(default if value is None else value)
    warn: Dict[str, float] = {}
    try:
        for entry in sorted(os.listdir(node)):
            if entry.startswith("hw_temp_warn") and not entry.endswith("_en"):
                value = _read_milli_c(node / entry)
                if value is not None:
                    warn[entry] = value
    except OSError:
        pass
    return ApexTelemetry(temperature, trips, warn)
