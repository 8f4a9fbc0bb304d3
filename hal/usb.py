"""Coral USB Accelerators through pyusb, and the DFU firmware push.

The backend is an argument (``backend=None`` is pyusb's default libusb backend),
so the mock bus in ``edgetpud.mock_device.usb_backend`` drives exactly these
lines. An accelerator enumerates as ``1a6e:089a`` until its firmware is loaded
(DFU mode) and as ``18d1:9302`` afterwards; both are listed. libedgetpu pushes
the firmware itself when it opens a DFU-mode device, so ``push_firmware`` is
tooling (``--usb-firmware``, tests), not a step the daemon requires.
"""
from __future__ import annotations

import errno
import logging
import time
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Iterator, List, Optional, Tuple

from .errors import DeviceInitError, DeviceIOError, DeviceTimeoutError, DeviceUnavailableError

log = logging.getLogger(__name__)

DFU_VID, DFU_PID = 0x1A6E, 0x089A
RUNTIME_VID, RUNTIME_PID = 0x18D1, 0x9302

# DFU 1.1 class requests and states (USB DFU spec, table 3.2 / 6.1.2).
DFU_DETACH, DFU_DNLOAD, DFU_UPLOAD, DFU_GETSTATUS, DFU_CLRSTATUS, DFU_GETSTATE, DFU_ABORT = range(7)
DFU_OUT = 0x21  # host to device | class | interface
DFU_IN = 0xA1   # device to host | class | interface
STATE_DFU_IDLE = 2
STATE_DFU_DNLOAD_SYNC = 3
STATE_DFU_DNBUSY = 4
STATE_DFU_DNLOAD_IDLE = 5
STATE_DFU_MANIFEST_SYNC = 6
STATE_DFU_MANIFEST = 7
STATE_DFU_MANIFEST_WAIT_RESET = 8
STATE_DFU_ERROR = 10
DFU_FUNCTIONAL_DESCRIPTOR = 0x21
DEFAULT_TRANSFER_SIZE = 256

# libusb speed codes (libusb_speed) to names.
USB_SPEEDS = {1: "low", 2: "full", 3: "high", 4: "super", 5: "super_plus"}
SPEED_HIGH = 3


@dataclass(frozen=True)
class UsbAccelerator:
    """One Coral USB Accelerator on the bus, in either mode."""

    bus: int
    address: int
    ports: Tuple[int, ...]
    vid: int
    pid: int
    speed: Optional[int]
    bcd_usb: int

    @property
    def needs_firmware(self) -> bool:
        return (self.vid, self.pid) == (DFU_VID, DFU_PID)

    @property
    def path(self) -> str:
        """Bus and port chain the way Linux names it (``2-1.3``): stable across reboots."""
        chain = ".".join(str(p) for p in self.ports) if self.ports else f"a{self.address}"
        return f"{self.bus}-{chain}"

    @property
    def vid_pid(self) -> str:
        return f"{self.vid:04x}:{self.pid:04x}"

    @property
    def speed_name(self) -> Optional[str]:
        return USB_SPEEDS.get(self.speed) if self.speed is not None else None

    @property
    def usb2_link(self) -> bool:
        """True when a USB 3 accelerator negotiated only high speed (slow cable or port)."""
        if self.speed is not None:
            return self.speed <= SPEED_HIGH
        return self.bcd_usb < 0x0300


def _is_coral(dev: Any) -> bool:
    return (dev.idVendor, dev.idProduct) in ((DFU_VID, DFU_PID), (RUNTIME_VID, RUNTIME_PID))


def _describe(dev: Any) -> UsbAccelerator:
    ports = tuple(dev.port_numbers or ()) or ((dev.port_number,) if dev.port_number else ())
    return UsbAccelerator(
        bus=int(dev.bus or 0), address=int(dev.address or 0), ports=ports,
        vid=int(dev.idVendor), pid=int(dev.idProduct),
        speed=dev.speed, bcd_usb=int(dev.bcdUSB),
    )


@lru_cache(maxsize=1)
def _warn_no_backend() -> None:
    """Said once per process: discovery rescans every few seconds."""
    log.warning("pyusb found no libusb backend: install libusb-1.0 (Debian: apt install libusb-1.0-0); "
                "USB accelerators cannot be listed")


def _find_devices(backend: Any) -> Iterator[Any]:
    import usb.core

    try:
        return usb.core.find(find_all=True, backend=backend, custom_match=_is_coral)
    except usb.core.NoBackendError:
        _warn_no_backend()
        return iter(())


def find_usb_accelerators(backend: Any = None) -> List[UsbAccelerator]:
    """List Coral accelerators (both modes) in enumeration order, the order ``usb:N`` follows.

    Silent: discovery calls it every few seconds, and says what it finds (such as a
    USB 2 link, :func:`slow_link`) only when a device enters service.
    """
    return [_describe(dev) for dev in _find_devices(backend)]


def slow_link(acc: UsbAccelerator) -> bool:
    """A running accelerator on a USB 2 link: it works, with ~10x less bandwidth.

    In DFU mode every accelerator enumerates at high speed, so only runtime mode counts.
    """
    return acc.usb2_link and not acc.needs_firmware


def warn_slow_link(acc: UsbAccelerator, device_id: str) -> None:
    """Say so in words an operator can act on (discovery decides when: once per stay)."""
    log.warning("%s (USB accelerator at %s) runs on a USB 2 link (%s speed): use a USB 3 port and cable",
                device_id, acc.path, acc.speed_name or "high")


def open_accelerator(acc: UsbAccelerator, backend: Any = None) -> Any:
    """Return the pyusb Device at ``acc``'s physical path.

    Raises:
        DeviceUnavailableError: nothing is plugged there any more.
    """
    for dev in _find_devices(backend):
        if _describe(dev).path == acc.path:
            return dev
    raise DeviceUnavailableError(f"no Coral USB Accelerator at {acc.path}")


def _dfu_interface(dev: Any) -> Tuple[int, int]:
    """The DFU interface number and wTransferSize from its functional descriptor."""
    cfg = dev.get_active_configuration() if _configured(dev) else dev[0]
    for intf in cfg:
        if intf.bInterfaceClass == 0xFE and intf.bInterfaceSubClass == 0x01:
            size = DEFAULT_TRANSFER_SIZE
            extra = bytes(intf.extra_descriptors or b"")
            i = 0
            while i + 1 < len(extra) and extra[i] > 0:
                length, kind = extra[i], extra[i + 1]
                if kind == DFU_FUNCTIONAL_DESCRIPTOR and length >= 7:
                    size = extra[i + 5] | (extra[i + 6] << 8)
                i += length
            return intf.bInterfaceNumber, size
    raise DeviceInitError("the device in DFU mode has no DFU interface")


def _configured(dev: Any) -> bool:
    import usb.core

    try:
        dev.get_active_configuration()
        return True
    except usb.core.USBError:
        return False


def _translate(exc: Exception, what: str) -> Exception:
    import usb.core

    if isinstance(exc, usb.core.USBTimeoutError):
        return DeviceTimeoutError(f"{what}: timed out")
    if isinstance(exc, usb.core.USBError) and exc.errno == errno.ENODEV:
        return DeviceUnavailableError(f"{what}: the device is gone ({exc})")
    return DeviceIOError(f"{what}: {exc}")


def _get_status(dev: Any, intf: int, timeout_ms: int) -> Tuple[int, int, int]:
    """DFU_GETSTATUS: (bStatus, bwPollTimeout ms, bState)."""
    raw = bytes(dev.ctrl_transfer(DFU_IN, DFU_GETSTATUS, 0, intf, 6, timeout_ms))
    if len(raw) < 6:
        raise DeviceIOError(f"DFU_GETSTATUS returned {len(raw)} bytes, expected 6")
    return raw[0], raw[1] | (raw[2] << 8) | (raw[3] << 16), raw[4]


def _wait_state(dev: Any, intf: int, wanted: Tuple[int, ...], timeout_ms: int, deadline: float) -> int:
    while True:
        status, poll_ms, state = _get_status(dev, intf, timeout_ms)
        if status != 0 or state == STATE_DFU_ERROR:
            raise DeviceInitError(f"DFU error: bStatus={status} bState={state}")
        if state in wanted:
            return state
        if time.monotonic() > deadline:
            raise DeviceTimeoutError(f"DFU state stuck at {state}, waiting for {wanted}")
        time.sleep(min(poll_ms, 100) / 1000.0)


def push_firmware(acc: UsbAccelerator, firmware: bytes, backend: Any = None,
                  timeout_ms: int = 1000, verify: bool = True) -> None:
    """Load firmware into an accelerator in DFU mode, then reset it into ``18d1:9302``.

    The exchange is DFU 1.1: DNLOAD blocks of wTransferSize with a GETSTATUS after
    each, a zero-length DNLOAD to start manifestation, an optional UPLOAD read back,
    then a port reset after which the device re-enumerates (old handles die).

    Raises:
        DeviceUnavailableError: the device vanished.
        DeviceInitError: the device is not in DFU mode or rejected the image.
        DeviceTimeoutError: a transfer or the state machine timed out.
    """
    import usb.core

    if not acc.needs_firmware:
        raise DeviceInitError(f"{acc.path} is {acc.vid_pid}, not in DFU mode; it already runs firmware")
    if not firmware:
        raise DeviceInitError("empty firmware image")
    dev = open_accelerator(acc, backend)
    deadline = time.monotonic() + 30.0
    try:
        intf, block_size = _dfu_interface(dev)
        for block, offset in enumerate(range(0, len(firmware), block_size)):
            chunk = firmware[offset:offset + block_size]
            dev.ctrl_transfer(DFU_OUT, DFU_DNLOAD, block & 0xFFFF, intf, chunk, timeout_ms)
            _wait_state(dev, intf, (STATE_DFU_DNLOAD_IDLE,), timeout_ms, deadline)
        dev.ctrl_transfer(DFU_OUT, DFU_DNLOAD, 0, intf, b"", timeout_ms)
        _wait_state(dev, intf, (STATE_DFU_IDLE, STATE_DFU_MANIFEST_WAIT_RESET), timeout_ms, deadline)
        if verify:
            readback = bytearray()
            block = 0
            while len(readback) < len(firmware):
                data = bytes(dev.ctrl_transfer(DFU_IN, DFU_UPLOAD, block & 0xFFFF, intf, block_size, timeout_ms))
                if not data:
                    break
                readback += data
                block += 1
            if bytes(readback[:len(firmware)]) != firmware:
                raise DeviceInitError(f"firmware read back from {acc.path} differs from the image sent")
        log.info("firmware (%d bytes) loaded into %s, resetting", len(firmware), acc.path)
        try:
            dev.reset()
        except usb.core.USBError as exc:
            # The device re-enumerates with new descriptors: libusb reports the old
            # handle as gone (NOT_FOUND or NO_DEVICE), which here means success.
            if exc.errno not in (errno.ENODEV, errno.ENOENT):
                raise
    except usb.core.USBError as exc:
        raise _translate(exc, f"DFU firmware push to {acc.path}") from exc
    finally:
        import usb.util

        try:
            usb.util.dispose_resources(dev)
        except usb.core.USBError:
            pass


def wait_for_runtime(acc: UsbAccelerator, backend: Any = None, timeout_s: float = 5.0) -> UsbAccelerator:
    """Wait until the accelerator at ``acc.path`` re-enumerates as ``18d1:9302``.

    Raises:
        DeviceTimeoutError: it did not come back in time.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        for found in find_usb_accelerators(backend):
            if found.path == acc.path and not found.needs_firmware:
                return found
        if time.monotonic() > deadline:
            raise DeviceTimeoutError(f"{acc.path} did not come back as 18d1:9302 after the firmware push")
        time.sleep(0.02)
