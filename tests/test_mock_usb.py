"""The mock bus through pyusb's own ``usb.core.find``, and the HAL's USB code on top of it."""
from __future__ import annotations

import errno

import pytest
import usb.core
import usb.util

from edgetpud.hal import usb as hal_usb
from edgetpud.hal.discovery import Discovery, parse_specs
from edgetpud.hal.errors import DeviceInitError
from edgetpud.mock_device.usb_backend import MockAccelerator, MockUsbBackend

CORAL_IDS = ((0x1A6E, 0x089A), (0x18D1, 0x9302))


def _coral(backend):
    return list(usb.core.find(find_all=True, backend=backend,
                              custom_match=lambda d: (d.idVendor, d.idProduct) in CORAL_IDS))


@pytest.mark.parametrize("count", [0, 1, 3])
def test_find_zero_one_three_accelerators(count):
    backend = MockUsbBackend.with_devices(count)
    devices = _coral(backend)
    assert len(devices) == count
    assert [(d.idVendor, d.idProduct) for d in devices] == [(0x18D1, 0x9302)] * count
    found = hal_usb.find_usb_accelerators(backend)
    assert [a.path for a in found] == [f"1-{i + 1}" for i in range(count)]
    assert all(a.speed_name == "super" and not a.usb2_link for a in found)


def test_runtime_descriptors_through_pyusb():
    backend = MockUsbBackend.with_devices(1)
    dev = usb.core.find(idVendor=0x18D1, idProduct=0x9302, backend=backend)
    assert dev is not None and dev.bcdUSB == 0x0320 and dev.port_numbers == (1,)
    assert usb.util.get_string(dev, dev.iManufacturer) == "Google Inc."
    dev.set_configuration()
    intf = dev.get_active_configuration()[(0, 0)]
    assert intf.bInterfaceClass == 0xFF
    eps = {ep.bEndpointAddress: ep for ep in intf}
    assert sorted(eps) == [0x01, 0x81, 0x82, 0x83]
    assert usb.util.endpoint_type(eps[0x01].bmAttributes) == usb.util.ENDPOINT_TYPE_BULK
    assert usb.util.endpoint_type(eps[0x83].bmAttributes) == usb.util.ENDPOINT_TYPE_INTR
    assert eps[0x81].wMaxPacketSize == 1024
    assert "18d1" in str(dev).lower()  # pyusb's full descriptor dump works on the mock


def test_bulk_round_trip_is_recorded():
    backend = MockUsbBackend.with_devices(1)
    dev = usb.core.find(idVendor=0x18D1, backend=backend)
    dev.set_configuration()
    assert dev.write(0x01, b"\x01\x02\x03", 100) == 3
    assert bytes(dev.read(0x81, 64, 100)) == b"\x01\x02\x03"
    kinds = [(t.kind, t.endpoint, t.data) for t in backend.transfers if t.kind.startswith("bulk")]
    assert kinds == [("bulk_out", 0x01, b"\x01\x02\x03"), ("bulk_in", 0x81, b"\x01\x02\x03")]
    with pytest.raises(usb.core.USBTimeoutError):
        dev.read(0x81, 64, 10)  # nothing queued


def test_usb2_link_is_reported_once_per_entry_into_service(caplog, tmp_path):
    accelerator = MockAccelerator(ports=(2, 1), mode="runtime", usb2=True)
    backend = MockUsbBackend([accelerator])
    dev = usb.core.find(idVendor=0x18D1, backend=backend)
    assert dev.bcdUSB == 0x0210 and dev.speed == 3
    [acc] = hal_usb.find_usb_accelerators(backend)
    assert acc.usb2_link and acc.speed_name == "high" and acc.path == "1-2.1"

    def warnings() -> int:
        return caplog.text.count("USB 2 link")

    discovery = Discovery(parse_specs(["usb"]), {"usb": {"pyusb_backend": backend}})
    with caplog.at_level("WARNING"):
        discovery.initial()
        assert warnings() == 1 and "usb:0" in caplog.text
        for _ in range(5):  # the pool rescans every few seconds: no repeat
            discovery.rescan()
        assert discovery.probe("usb:0") and warnings() == 1
        accelerator.unplug()
        assert discovery.rescan().lost == ["usb:0"]
        accelerator.replug()  # back in DFU mode: every accelerator enumerates at high speed there
        assert [d.id for d in discovery.rescan().returned] == ["usb:0"]
        assert warnings() == 1
        accelerator.replug(mode="runtime")  # firmware loaded: its real link shows, said again once
        discovery.rescan()
        discovery.rescan()
        assert warnings() == 2


def test_dfu_device_is_brought_to_runtime_mode():
    backend = MockUsbBackend([MockAccelerator(ports=(3,), mode="dfu")])
    [acc] = hal_usb.find_usb_accelerators(backend)
    assert acc.needs_firmware and acc.vid_pid == "1a6e:089a"
    dfu = usb.core.find(idVendor=0x1A6E, idProduct=0x089A, backend=backend)
    [intf] = list(dfu[0])
    assert (intf.bInterfaceClass, intf.bInterfaceSubClass) == (0xFE, 0x01)
    firmware = bytes(range(256)) * 3 + b"tail"  # 4 blocks of wTransferSize 256
    hal_usb.push_firmware(acc, firmware, backend=backend)
    back = hal_usb.wait_for_runtime(acc, backend=backend, timeout_s=1.0)
    assert back.vid_pid == "18d1:9302" and back.path == acc.path and back.address != acc.address
    assert backend.accelerators[0].firmware == firmware
    blocks = [t for t in backend.transfers if t.kind == "ctrl" and t.request == hal_usb.DFU_DNLOAD]
    assert [t.value for t in blocks] == [0, 1, 2, 3, 0] and blocks[-1].length == 0
    assert sum(t.length for t in blocks) == len(firmware)
    statuses = [t for t in backend.transfers if t.kind == "ctrl" and t.request == hal_usb.DFU_GETSTATUS]
    assert len(statuses) == 5
    assert any(t.kind == "reset" for t in backend.transfers)
    # the handle opened in DFU mode died with the re-enumeration
    with pytest.raises(usb.core.USBError) as err:
        dfu.ctrl_transfer(hal_usb.DFU_IN, hal_usb.DFU_GETSTATE, 0, 0, 1)
    assert err.value.errno == errno.ENODEV


def test_push_firmware_refuses_a_runtime_device():
    backend = MockUsbBackend.with_devices(1)
    [acc] = hal_usb.find_usb_accelerators(backend)
    with pytest.raises(DeviceInitError):
        hal_usb.push_firmware(acc, b"x", backend=backend)


def test_unplug_and_replug():
    backend = MockUsbBackend.with_devices(2)
    dev = usb.core.find(idVendor=0x18D1, backend=backend)
    dev.set_configuration()
    backend.unplug(0)
    assert [a.path for a in hal_usb.find_usb_accelerators(backend)] == ["1-2"]
    with pytest.raises(usb.core.USBError) as err:
        dev.write(0x01, b"x", 100)
    assert err.value.errno == errno.ENODEV
    backend.replug(0)  # firmware is in RAM: it comes back in DFU mode
    found = hal_usb.find_usb_accelerators(backend)
    assert [(a.path, a.needs_firmware) for a in found] == [("1-1", True), ("1-2", False)]


def test_unplugged_mid_transfer():
    backend = MockUsbBackend.with_devices(1)
    dev = usb.core.find(idVendor=0x18D1, backend=backend)
    dev.set_configuration()
    backend.accelerators[0].inject("unplug")
    with pytest.raises(usb.core.USBError) as err:
        dev.write(0x01, b"abcdef", 100)
    assert err.value.errno == errno.ENODEV
    last = backend.transfers[-1]
    assert (last.kind, last.error, last.data) == ("bulk_out", "ENODEV", b"abc")
    assert hal_usb.find_usb_accelerators(backend) == []


def test_timeout_and_stall_faults():
    backend = MockUsbBackend.with_devices(1)
    acc = backend.accelerators[0]
    dev = usb.core.find(idVendor=0x18D1, backend=backend)
    dev.set_configuration()
    acc.inject("timeout")
    with pytest.raises(usb.core.USBTimeoutError):
        dev.write(0x01, b"x", 100)
    assert dev.write(0x01, b"y", 100) == 1  # one fault, one transfer
    acc.inject("stall")
    for _ in range(2):  # the endpoint stays halted ...
        with pytest.raises(usb.core.USBError) as err:
            dev.write(0x01, b"z", 100)
        assert err.value.errno == errno.EPIPE
    dev.clear_halt(0x01)  # ... until the host clears it
    assert dev.write(0x01, b"z", 100) == 1
    assert [t.error for t in backend.transfers if t.error] == ["ETIMEDOUT", "EPIPE", "EPIPE"]


def test_latency_setting_delays_transfers():
    import time

    backend = MockUsbBackend([MockAccelerator(mode="runtime", latency_s=0.02)])
    dev = usb.core.find(idVendor=0x18D1, backend=backend)
    dev.set_configuration()
    start = time.perf_counter()
    dev.write(0x01, b"x", 100)
    assert time.perf_counter() - start >= 0.02


def test_real_default_backend_is_the_same_code(monkeypatch):
    """backend=None goes to pyusb's own libusb lookup; without libusb the HAL lists nothing, loudly."""
    seen = {}

    def fake_find(find_all=False, backend=None, custom_match=None, **kw):
        seen["backend"] = backend
        raise usb.core.NoBackendError("No backend available")

    monkeypatch.setattr(usb.core, "find", fake_find)
    assert hal_usb.find_usb_accelerators() == []
    assert seen == {"backend": None}
