"""A pyusb backend that plays a bus of Coral USB Accelerators.

Pass it as ``backend=`` to ``usb.core.find`` (or as the usb backend's ``pyusb_backend`` option)
and pyusb's own code runs on top of it, exactly as it does on libusb. Each
``MockAccelerator`` is a small state machine of the real device:

* boots in DFU mode (``1a6e:089a``, one DFU interface with a functional
  descriptor), accepts DNLOAD blocks / GETSTATUS / UPLOAD, and after a zero-length
  DNLOAD and a port reset re-enumerates as ``18d1:9302`` (vendor interface, bulk
  OUT 0x01, bulk IN 0x81 and 0x82, interrupt IN 0x83). Handles opened before the
  re-enumeration fail with ENODEV, as libusb's do.
* bulk OUT data is looped back on bulk IN 0x81 (so tests can check a round trip);
  a read with nothing queued times out at once.
* faults on demand: ``unplug()``, ``replug()``, and queued faults for the next
  transfer (``"timeout"``, ``"stall"`` -> EPIPE until ``clear_halt``, ``"unplug"`` ->
  the device vanishes mid-transfer), ``usb2=True`` for a high-speed-only link,
  ``latency_s`` per transfer.
* every transfer is appended to ``backend.transfers`` for tests to assert on.

With a ``MockWorld`` the plug state follows the shared state directory, so an
unplug from ``MockControl`` in any process is seen by discovery here.
"""
from __future__ import annotations

import array
import collections
import errno
import itertools
import logging
import threading
import time
from dataclasses import dataclass
from typing import Any, Deque, Dict, List, Optional, Sequence, Set, Tuple

import usb.backend
from usb.core import USBError, USBTimeoutError

from edgetpud.hal import usb as hal_usb

log = logging.getLogger(__name__)

# libusb error codes, so errors look exactly like the libusb1 backend's.
LIBUSB_ERROR_IO, LIBUSB_ERROR_NO_DEVICE, LIBUSB_ERROR_NOT_FOUND = -1, -4, -5
LIBUSB_ERROR_TIMEOUT, LIBUSB_ERROR_PIPE = -7, -9
SPEED_HIGH, SPEED_SUPER = 3, 4

DFU_TRANSFER_SIZE = 256
MANUFACTURER = {"dfu": "Global Unichip Corp.", "runtime": "Google Inc."}
PRODUCT = {"dfu": "Coral USB Accelerator (DFU)", "runtime": "Coral USB Accelerator"}


def _vid_pid(mode: str) -> Tuple[int, int]:
    """What an accelerator enumerates as: DFU mode until its firmware is loaded."""
    if mode == "dfu":
        return hal_usb.DFU_VID, hal_usb.DFU_PID
    return hal_usb.RUNTIME_VID, hal_usb.RUNTIME_PID


def _no_device() -> USBError:
    return USBError("No such device (it may have been disconnected)", LIBUSB_ERROR_NO_DEVICE, errno.ENODEV)


class _Desc:
    """A descriptor: attributes named as in the USB spec, which is what pyusb copies."""

    def __init__(self, **fields: Any) -> None:
        self.__dict__.update(fields)

    def __getattr__(self, name: str) -> Any:  # typed access to the spec's field names
        raise AttributeError(name)


@dataclass
class Transfer:
    """One recorded transfer (or reset); ``error`` is the errno name when it failed."""

    time: float
    device: str
    kind: str
    endpoint: int = 0
    request: Optional[int] = None
    value: Optional[int] = None
    index: Optional[int] = None
    data: bytes = b""
    length: int = 0
    error: Optional[str] = None


class MockAccelerator:
    """One simulated Coral USB Accelerator on a port of the mock bus."""

    def __init__(self, bus: int = 1, ports: Tuple[int, ...] = (1,), mode: str = "dfu",
                 usb2: bool = False, latency_s: float = 0.0, serial: Optional[str] = None,
                 boot_mode: Optional[str] = None, world_id: Optional[str] = None) -> None:
        if mode not in ("dfu", "runtime"):
            raise ValueError("mode is 'dfu' or 'runtime'")
        self.bus, self.ports = bus, tuple(ports)
        self.mode = mode
        # Firmware lives in RAM: after a power cycle a real accelerator is in DFU mode again.
        self.boot_mode = boot_mode or "dfu"
        self.usb2 = usb2
        self.latency_s = latency_s
        self.serial = serial or f"MOCK{bus:02d}{''.join(str(p) for p in ports)}"
        self.world_id = world_id
        self.plugged = True
        self.generation = 0
        self.address = 0
        self.configuration = 0
        self.claimed: Set[int] = set()
        self.halted: Set[int] = set()
        self.faults: Deque[str] = collections.deque()
        self.loopback: Dict[int, Deque[bytes]] = collections.defaultdict(collections.deque)
        self.firmware = b""
        self._dfu_reset()

    @property
    def path(self) -> str:
        return f"{self.bus}-{'.'.join(str(p) for p in self.ports)}"

    @property
    def vid_pid(self) -> Tuple[int, int]:
        return _vid_pid(self.mode)

    def _dfu_reset(self) -> None:
        self.dfu_state = hal_usb.STATE_DFU_IDLE
        self.dfu_status = 0
        self.dfu_next_block = 0
        self.dfu_data = bytearray()

    # -- the outside world ---------------------------------------------------
    def inject(self, fault: str) -> None:
        """Queue a fault for the next transfer: "timeout", "stall" or "unplug" (mid-transfer)."""
        if fault not in ("timeout", "stall", "unplug"):
            raise ValueError(f"unknown USB fault {fault!r}")
        self.faults.append(fault)

    def unplug(self) -> None:
        """Pull the cable: the device leaves the bus and every open handle dies."""
        self.plugged = False
        self.generation += 1
        self.claimed.clear()

    def replug(self, mode: Optional[str] = None) -> None:
        """Plug it back. Firmware lives in RAM, so it boots in ``boot_mode`` (DFU) again."""
        self.mode = mode or self.boot_mode
        self.plugged = True
        self.generation += 1
        self.configuration = 0
        self.halted.clear()
        self.loopback.clear()
        self._dfu_reset()


class _DevRef:
    """What ``enumerate_devices`` yields: one device as seen at one enumeration."""

    def __init__(self, acc: MockAccelerator, address: int) -> None:
        self.acc = acc
        self.generation = acc.generation
        self.mode = acc.mode
        self.address = address


class _Handle:
    def __init__(self, ref: _DevRef) -> None:
        self.ref = ref
        self.acc = ref.acc
        self.generation = ref.generation


class MockUsbBackend(usb.backend.IBackend):
    """The bus: a list of ``MockAccelerator`` and a record of transfers."""

    def __init__(self, accelerators: Sequence[MockAccelerator] = (), world: Any = None) -> None:
        super().__init__()
        self.accelerators: List[MockAccelerator] = list(accelerators)
        self.world = world
        self.transfers: List[Transfer] = []
        self._lock = threading.RLock()
        self._addresses = itertools.count(2)
        for acc in self.accelerators:
            acc.address = next(self._addresses)

    @classmethod
    def with_devices(cls, count: int, mode: str = "runtime", **kwargs: Any) -> "MockUsbBackend":
        """``count`` accelerators on bus 1, ports 1..count."""
        return cls([MockAccelerator(ports=(i + 1,), mode=mode, **kwargs) for i in range(count)])

    @classmethod
    def from_world(cls, world: Any) -> "MockUsbBackend":
        """One runtime-mode accelerator per mock device of the world (mock:i on port i+1)."""
        accs = []
        for device_id in world.device_ids():
            i = int(device_id.split(":")[1])
            # The world stands in for libedgetpu too: its devices come back with firmware.
            accs.append(MockAccelerator(ports=(i + 1,), mode="runtime", boot_mode="runtime", world_id=device_id))
        return cls(accs, world=world)

    def add(self, acc: MockAccelerator) -> MockAccelerator:
        with self._lock:
            acc.address = next(self._addresses)
            self.accelerators.append(acc)
        return acc

    def unplug(self, index: int) -> None:
        with self._lock:
            self.accelerators[index].unplug()

    def replug(self, index: int, mode: Optional[str] = None) -> None:
        with self._lock:
            acc = self.accelerators[index]
            acc.replug(mode)
            acc.address = next(self._addresses)

    def _record(self, acc: MockAccelerator, kind: str, error: Optional[str] = None, **fields: Any) -> None:
        data = bytes(fields.pop("data", b""))
        self.transfers.append(Transfer(time.monotonic(), acc.path, kind, data=data,
                                       length=fields.pop("length", len(data)), error=error, **fields))

    def _sync_world(self) -> None:
        if self.world is None:
            return
        for acc in self.accelerators:
            if acc.world_id is None:
                continue
            try:
                plugged = self.world.plugged(acc.world_id)
            except KeyError:
                continue
            if plugged and not acc.plugged:
                acc.replug()
                acc.address = next(self._addresses)
            elif not plugged and acc.plugged:
                acc.unplug()

    # -- enumeration and descriptors ---------------------------------------
    def enumerate_devices(self) -> List[_DevRef]:
        with self._lock:
            self._sync_world()
            return [_DevRef(acc, acc.address) for acc in self.accelerators if acc.plugged]

    def get_parent(self, dev: _DevRef) -> None:
        return None

    def get_device_descriptor(self, dev: _DevRef) -> _Desc:
        acc = dev.acc
        vid, pid = _vid_pid(dev.mode)  # the mode it had when enumerated
        return _Desc(
            bLength=18, bDescriptorType=1, bcdUSB=0x0210 if acc.usb2 else 0x0320,
            bDeviceClass=0, bDeviceSubClass=0, bDeviceProtocol=0,
            bMaxPacketSize0=64 if acc.usb2 else 9, idVendor=vid, idProduct=pid,
            bcdDevice=0x0100, iManufacturer=1, iProduct=2, iSerialNumber=3, bNumConfigurations=1,
            bus=acc.bus, address=dev.address, port_number=acc.ports[-1], port_numbers=acc.ports,
            speed=SPEED_HIGH if acc.usb2 else SPEED_SUPER,
        )

    def _interfaces(self, dev: _DevRef) -> List[Tuple[_Desc, List[_Desc]]]:
        if dev.mode == "dfu":
            functional = [9, hal_usb.DFU_FUNCTIONAL_DESCRIPTOR, 0x0B, 0xE8, 0x03,
                          DFU_TRANSFER_SIZE & 0xFF, DFU_TRANSFER_SIZE >> 8, 0x10, 0x01]
            intf = _Desc(bLength=9, bDescriptorType=4, bInterfaceNumber=0, bAlternateSetting=0,
                         bNumEndpoints=0, bInterfaceClass=0xFE, bInterfaceSubClass=0x01,
                         bInterfaceProtocol=0x02, iInterface=0, extra_descriptors=functional)
            return [(intf, [])]
        packet = 512 if dev.acc.usb2 else 1024
        eps = [
            _Desc(bLength=7, bDescriptorType=5, bEndpointAddress=addr, bmAttributes=attr,
                  wMaxPacketSize=size, bInterval=interval, bRefresh=0, bSynchAddress=0, extra_descriptors=[])
            for addr, attr, size, interval in (
                (0x01, 2, packet, 0), (0x81, 2, packet, 0), (0x82, 2, packet, 0), (0x83, 3, 64, 4))
        ]
        intf = _Desc(bLength=9, bDescriptorType=4, bInterfaceNumber=0, bAlternateSetting=0,
                     bNumEndpoints=len(eps), bInterfaceClass=0xFF, bInterfaceSubClass=0xFF,
                     bInterfaceProtocol=0xFF, iInterface=0, extra_descriptors=[])
        return [(intf, eps)]

    def get_configuration_descriptor(self, dev: _DevRef, config: int) -> _Desc:
        if config != 0:
            raise IndexError(f"invalid configuration index {config}")
        intfs = self._interfaces(dev)
        total = 9 + sum(i.bLength + len(i.extra_descriptors) + 7 * len(eps) for i, eps in intfs)
        return _Desc(bLength=9, bDescriptorType=2, wTotalLength=total, bNumInterfaces=len(intfs),
                     bConfigurationValue=1, iConfiguration=0, bmAttributes=0x80,
                     bMaxPower=250 if dev.acc.usb2 else 112, extra_descriptors=[])

    def get_interface_descriptor(self, dev: _DevRef, intf: int, alt: int, config: int) -> _Desc:
        intfs = self._interfaces(dev)
        if config != 0 or intf >= len(intfs) or alt != 0:
            raise IndexError(f"invalid interface {intf} alt {alt}")
        return intfs[intf][0]

    def get_endpoint_descriptor(self, dev: _DevRef, ep: int, intf: int, alt: int, config: int) -> _Desc:
        intfs = self._interfaces(dev)
        if config != 0 or intf >= len(intfs) or alt != 0 or ep >= len(intfs[intf][1]):
            raise IndexError(f"invalid endpoint index {ep}")
        return intfs[intf][1][ep]

    # -- handles ---------------------------------------------------------------
    def _check(self, handle: _Handle) -> MockAccelerator:
        acc = handle.acc
        if not acc.plugged or handle.generation != acc.generation:
            raise _no_device()
        return acc

    def open_device(self, dev: _DevRef) -> _Handle:
        with self._lock:
            if not dev.acc.plugged or dev.generation != dev.acc.generation:
                raise _no_device()
            return _Handle(dev)

    def close_device(self, dev_handle: _Handle) -> None:
        return None

    def set_configuration(self, dev_handle: _Handle, config_value: int) -> None:
        with self._lock:
            acc = self._check(dev_handle)
            if config_value not in (0, 1):
                raise USBError("Entity not found", LIBUSB_ERROR_NOT_FOUND, errno.ENOENT)
            acc.configuration = config_value

    def get_configuration(self, dev_handle: _Handle) -> int:
        with self._lock:
            return self._check(dev_handle).configuration

    def set_interface_altsetting(self, dev_handle: _Handle, intf: int, altsetting: int) -> None:
        with self._lock:
            self._check(dev_handle)
            if intf != 0 or altsetting != 0:
                raise USBError("Entity not found", LIBUSB_ERROR_NOT_FOUND, errno.ENOENT)

    def claim_interface(self, dev_handle: _Handle, intf: int) -> None:
        with self._lock:
            self._check(dev_handle).claimed.add(intf)

    def release_interface(self, dev_handle: _Handle, intf: int) -> None:
        with self._lock:
            self._check(dev_handle).claimed.discard(intf)

    def is_kernel_driver_active(self, dev_handle: _Handle, intf: int) -> bool:
        return False

    def detach_kernel_driver(self, dev_handle: _Handle, intf: int) -> None:
        return None

    def attach_kernel_driver(self, dev_handle: _Handle, intf: int) -> None:
        return None

    def clear_halt(self, dev_handle: _Handle, ep: int) -> None:
        with self._lock:
            self._check(dev_handle).halted.discard(ep)

    def reset_device(self, dev_handle: _Handle) -> None:
        """A port reset; a DFU device holding a manifested image comes back as 18d1:9302.

        Like libusb, a reset that changes the descriptors reports NOT_FOUND: the old
        handle is gone and the device must be found again.
        """
        with self._lock:
            acc = self._check(dev_handle)
            manifested = acc.mode == "dfu" and acc.dfu_state == hal_usb.STATE_DFU_MANIFEST_WAIT_RESET
            self._record(acc, "reset")
            if manifested:
                acc.firmware = bytes(acc.dfu_data)
                acc.mode = "runtime"
            acc.generation += 1
            acc.address = next(self._addresses)
            acc.configuration = 0
            acc.claimed.clear()
            acc.halted.clear()
            acc._dfu_reset()
            if manifested:
                log.info("mock accelerator %s re-enumerated as 18d1:9302", acc.path)
                raise USBError("Entity not found", LIBUSB_ERROR_NOT_FOUND, errno.ENOENT)

    # -- transfers ---------------------------------------------------------------
    def _start_transfer(self, handle: _Handle, kind: str, endpoint: int, data: bytes = b"",
                        **fields: Any) -> MockAccelerator:
        """Common to every transfer: liveness, latency, queued faults, halted endpoints."""
        with self._lock:
            acc = self._check(handle)
            latency = acc.latency_s
        if latency:
            time.sleep(latency)
        with self._lock:
            acc = self._check(handle)
            fault = acc.faults.popleft() if acc.faults else None
            if fault == "timeout":
                self._record(acc, kind, "ETIMEDOUT", endpoint=endpoint, data=data, **fields)
                raise USBTimeoutError("Operation timed out", LIBUSB_ERROR_TIMEOUT, errno.ETIMEDOUT)
            if fault == "stall":
                acc.halted.add(endpoint)
            if fault == "unplug":
                self._record(acc, kind, "ENODEV", endpoint=endpoint, data=data[: len(data) // 2], **fields)
                acc.unplug()
                raise _no_device()
            if endpoint in acc.halted:
                self._record(acc, kind, "EPIPE", endpoint=endpoint, data=data, **fields)
                raise USBError("Pipe error", LIBUSB_ERROR_PIPE, errno.EPIPE)
            return acc

    def bulk_write(self, dev_handle: _Handle, ep: int, intf: int, data: array.array, timeout: int) -> int:
        payload = bytes(data)
        acc = self._start_transfer(dev_handle, "bulk_out", ep, payload)
        with self._lock:
            if acc.mode != "runtime":
                raise USBError("Pipe error", LIBUSB_ERROR_PIPE, errno.EPIPE)
            acc.loopback[0x81].append(payload)
            self._record(acc, "bulk_out", endpoint=ep, data=payload)
        return len(payload)

    def _read(self, kind: str, dev_handle: _Handle, ep: int, buff: array.array) -> int:
        acc = self._start_transfer(dev_handle, kind, ep)
        with self._lock:
            queue = acc.loopback.get(ep)
            if not queue:
                self._record(acc, kind, "ETIMEDOUT", endpoint=ep)
                raise USBTimeoutError("Operation timed out", LIBUSB_ERROR_TIMEOUT, errno.ETIMEDOUT)
            chunk = queue.popleft()
            room = len(buff) * buff.itemsize
            if len(chunk) > room:
                queue.appendleft(chunk[room:])
                chunk = chunk[:room]
            memoryview(buff).cast("B")[: len(chunk)] = chunk
            self._record(acc, kind, endpoint=ep, data=chunk)
            return len(chunk)

    def bulk_read(self, dev_handle: _Handle, ep: int, intf: int, buff: array.array, timeout: int) -> int:
        return self._read("bulk_in", dev_handle, ep, buff)

    def intr_read(self, dev_handle: _Handle, ep: int, intf: int, buff: array.array, timeout: int) -> int:
        return self._read("intr_in", dev_handle, ep, buff)

    def ctrl_transfer(self, dev_handle: _Handle, bmRequestType: int, bRequest: int, wValue: int,
                      wIndex: int, data: array.array, timeout: int) -> int:
        payload = bytes(data) if not bmRequestType & 0x80 else b""
        acc = self._start_transfer(dev_handle, "ctrl", 0, payload, request=bRequest, value=wValue, index=wIndex)
        with self._lock:
            acc = self._check(dev_handle)
            reply = self._control(acc, bmRequestType, bRequest, wValue, wIndex, payload, len(data))
            if bmRequestType & 0x80:
                reply = reply[: len(data)]
                memoryview(data).cast("B")[: len(reply)] = reply
                self._record(acc, "ctrl", endpoint=0, request=bRequest, value=wValue, index=wIndex, data=reply)
                return len(reply)
            self._record(acc, "ctrl", endpoint=0, request=bRequest, value=wValue, index=wIndex, data=payload)
            return len(payload)

    def _stall(self, acc: MockAccelerator, why: str) -> USBError:
        log.debug("mock %s stalls a control request: %s", acc.path, why)
        return USBError("Pipe error", LIBUSB_ERROR_PIPE, errno.EPIPE)

    def _control(self, acc: MockAccelerator, rtype: int, request: int, value: int, index: int,
                 payload: bytes, length: int) -> bytes:
        if rtype == 0x80 and request == 6 and value >> 8 == 3:  # GET_DESCRIPTOR(string)
            which = value & 0xFF
            if which == 0:
                return bytes([4, 3, 0x09, 0x04])
            text = {1: MANUFACTURER[acc.mode], 2: PRODUCT[acc.mode], 3: acc.serial}.get(which)
            if text is None:
                raise self._stall(acc, f"no string {which}")
            encoded = text.encode("utf-16-le")
            return bytes([2 + len(encoded), 3]) + encoded
        if acc.mode == "dfu" and rtype in (hal_usb.DFU_OUT, hal_usb.DFU_IN):
            return self._dfu(acc, request, value, payload, length)
        if acc.mode == "runtime" and rtype & 0x60 == 0x40:  # vendor requests: accept, answer zeros
            return bytes(length) if rtype & 0x80 else b""
        raise self._stall(acc, f"unsupported request type {rtype:#x} request {request}")

    def _dfu(self, acc: MockAccelerator, request: int, value: int, payload: bytes, length: int) -> bytes:
        if request == hal_usb.DFU_DNLOAD:
            if payload:
                if acc.dfu_state not in (hal_usb.STATE_DFU_IDLE, hal_usb.STATE_DFU_DNLOAD_IDLE) \
                        or value != acc.dfu_next_block:
                    acc.dfu_state, acc.dfu_status = hal_usb.STATE_DFU_ERROR, 0x0F  # errSTALLEDPKT
                    raise self._stall(acc, f"DNLOAD block {value} out of order or state")
                acc.dfu_data += payload
                acc.dfu_next_block += 1
                acc.dfu_state = hal_usb.STATE_DFU_DNLOAD_SYNC
            else:
                if acc.dfu_state != hal_usb.STATE_DFU_DNLOAD_IDLE or not acc.dfu_data:
                    acc.dfu_state, acc.dfu_status = hal_usb.STATE_DFU_ERROR, 0x0F
                    raise self._stall(acc, "zero-length DNLOAD without an image")
                acc.dfu_state = hal_usb.STATE_DFU_MANIFEST_SYNC
            return b""
        if request == hal_usb.DFU_GETSTATUS:
            if acc.dfu_state == hal_usb.STATE_DFU_DNLOAD_SYNC:
                acc.dfu_state = hal_usb.STATE_DFU_DNLOAD_IDLE
            elif acc.dfu_state == hal_usb.STATE_DFU_MANIFEST_SYNC:
                acc.dfu_state = hal_usb.STATE_DFU_MANIFEST_WAIT_RESET
            return bytes([acc.dfu_status, 0, 0, 0, acc.dfu_state, 0])
        if request == hal_usb.DFU_GETSTATE:
            return bytes([acc.dfu_state])
        if request == hal_usb.DFU_UPLOAD:
            start = value * length
            return bytes(acc.dfu_data[start:start + length])
        if request in (hal_usb.DFU_CLRSTATUS, hal_usb.DFU_ABORT):
            acc._dfu_reset()
            return b""
        if request == hal_usb.DFU_DETACH:
            return b""
        raise self._stall(acc, f"unknown DFU request {request}")
