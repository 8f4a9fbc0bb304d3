"""A fake ``/sys/class/apex`` tree in a folder, for ``hal.pcie`` to read as if it were real.

Values are written the way the apex driver exposes them (milli-°C integers) and
replaced atomically, so a poll in another thread or process never reads half a
number.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence, Union

from edgetpud.hal.pcie import apex_node_dir
from edgetpud.hal.thermal import DEFAULT_TRIP_POINTS_C

from .state import write_atomic


def _milli_c(value_c: float) -> str:
    """A temperature the way the driver writes it: milli-°C, one integer and a newline."""
    return f"{int(round(value_c * 1000))}\n"


class FakeSysfs:
    """Builds and drives ``<root>/class/apex/apex_N``; pass ``root`` as ``sysfs_root``."""

    def __init__(self, root: Union[str, Path]) -> None:
        self.root = Path(root)

    def node_dir(self, index: int) -> Path:
        return apex_node_dir(index, self.root)

    def add_apex(self, index: int, temperature_c: float = 45.0,
                 trip_points_c: Sequence[float] = DEFAULT_TRIP_POINTS_C,
                 hw_temp_warn_c: Optional[Sequence[float]] = (100.0, 105.0)) -> Path:
        """Create the node with its ``temp``, three trip points and hw warn thresholds."""
        node = self.node_dir(index)
        node.mkdir(parents=True, exist_ok=True)
        self.set_temperature(index, temperature_c)
        for i, trip in enumerate(trip_points_c):
            self.set_trip_point(index, i, trip)
        for i, warn in enumerate(hw_temp_warn_c or (), start=1):
            write_atomic(node / f"hw_temp_warn{i}", _milli_c(warn))
            write_atomic(node / f"hw_temp_warn{i}_en", "1\n")
        return node

    def set_temperature(self, index: int, temperature_c: float) -> None:
        write_atomic(self.node_dir(index) / "temp", _milli_c(temperature_c))

    def set_trip_point(self, index: int, trip: int, temperature_c: float) -> None:
        write_atomic(self.node_dir(index) / f"trip_point{trip}_temp", _milli_c(temperature_c))

    def remove_apex(self, index: int) -> None:
        """The card disappears (driver unbound): delete its node."""
        node = self.node_dir(index)
        if node.exists():
            for entry in node.iterdir():
                entry.unlink()
            node.rmdir()
