"""The PCIe / M.2 backend: apex nodes under a sysfs root, numbered by the driver."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional, Union

from ..backend import Found
from .. import pcie
from ._edgetpu import EdgeTpuBackend


class PciBackend(EdgeTpuBackend):
    """``pci[:N]``: ``/sys/class/apex/apex_N`` is ``pci:N``; the temperature is read from the node.

    ``sysfs_root`` is where ``class/apex`` is read (None: ``/sys``), so tests
    build a tree in a folder instead of patching ``open``.
    """

    name = "pci"
    in_auto = True
    order = 20

    def __init__(self, sysfs_root: Union[str, Path, None] = None, executor_backend: Optional[str] = None) -> None:
        super().__init__(executor_backend)
        self.sysfs_root = str(sysfs_root) if sysfs_root is not None else None

    def scan(self) -> List[Found]:
        return [
            Found(f"pci:{apex.index}", self.name, apex.index, apex.dev_path, sysfs_dir=apex.sysfs_dir,
                  delegate_device=f"pci:{apex.index}")
            for apex in pcie.find_apex_devices(self.sysfs_root)
        ]


BACKEND = PciBackend
