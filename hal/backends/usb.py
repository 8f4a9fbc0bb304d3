"""The USB backend: Coral USB Accelerators through pyusb, numbered in order of appearance."""
from __future__ import annotations

from pathlib import Path
from typing import Any, List, Optional, Union

from .. import usb as hal_usb
from ..backend import Found
from ..errors import DeviceInitError
from ._edgetpu import EdgeTpuBackend


class UsbBackend(EdgeTpuBackend):
    """``usb[:N]``: accelerators in either mode; ``usb:N`` follows enumeration order.

    ``pyusb_backend`` is handed to pyusb (None: its libusb default), so a
    simulated bus drives exactly these lines. ``firmware`` is an image the pool
    pushes to an accelerator in DFU mode before its worker starts (None: leave it
    to libedgetpu, which loads its own firmware when it opens the device).
    """

    name = "usb"
    in_auto = True
    ordered_ids = True
    order = 10

    def __init__(self, pyusb_backend: Any = None, firmware: Union[str, Path, None] = None,
                 executor_backend: Optional[str] = None) -> None:
        super().__init__(executor_backend)
        self.pyusb_backend = pyusb_backend
        self.firmware = Path(firmware) if firmware else None

    def scan(self) -> List[Found]:
        return [Found("", self.name, i, acc.path, usb=acc, delegate_device=f"usb:{i}")
                for i, acc in enumerate(hal_usb.find_usb_accelerators(self.pyusb_backend))]

    def prepare(self, found: Found) -> Found:
        """Push ``firmware`` to a DFU-mode accelerator and wait for it to come back as ``18d1:9302``.

        Raises:
            DeviceInitError, DeviceTimeoutError, DeviceUnavailableError: the push failed.
        """
        acc = found.usb
        if acc is None or not acc.needs_firmware or self.firmware is None:
            return found
        try:
            image = self.firmware.read_bytes()
        except OSError as exc:
            raise DeviceInitError(f"cannot read the USB firmware {self.firmware}: {exc.strerror or exc}") from exc
        hal_usb.push_firmware(acc, image, backend=self.pyusb_backend)
        found.usb = hal_usb.wait_for_runtime(acc, backend=self.pyusb_backend)
        return found


BACKEND = UsbBackend
