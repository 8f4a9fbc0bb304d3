"""--device specs, enumeration across transports, and hot-plug bookkeeping."""
from __future__ import annotations

import logging

import pytest

from edgetpud.hal import DevicePool, DeviceSpecError, PoolOptions
from edgetpud.hal.discovery import DeviceSpec, Discovery, parse_specs
from edgetpud.mock_device.sysfs import FakeSysfs
from edgetpud.mock_device.usb_backend import MockAccelerator, MockUsbBackend


def _rig(sysfs_root, bus):
    """A host of simulated buses: apex nodes under ``sysfs_root``, accelerators on ``bus``."""
    return {"pci": {"sysfs_root": sysfs_root}, "usb": {"pyusb_backend": bus}}


def test_parse_specs():
    assert parse_specs(["auto"]) == [DeviceSpec("auto")]
    assert parse_specs([]) == [DeviceSpec("auto")]
    assert parse_specs(["mock"]) == [DeviceSpec("mock")]
    assert parse_specs(["mock:3"]) == [DeviceSpec("mock", 3)]
    assert parse_specs(["usb:0", "pci", "USB:0"]) == [DeviceSpec("usb", 0), DeviceSpec("pci")]
    assert parse_specs(["cpu"]) == [DeviceSpec("cpu")]
    for bad in (["gpu"], ["usb:x"], ["mock:0"], ["cpu:2"], ["mock", "cpu"], ["mock:1", "mock:2"]):
        with pytest.raises(DeviceSpecError):
            parse_specs(bad)
    assert issubclass(DeviceSpecError, ValueError)


def test_auto_finds_usb_and_pci(tmp_path):
    FakeSysfs(tmp_path).add_apex(0)
    bus = MockUsbBackend([MockAccelerator(ports=(1,), mode="runtime"), MockAccelerator(ports=(2, 4), mode="dfu")])
    disc = Discovery(parse_specs(["auto"]), _rig(tmp_path, bus))
    found = {f.id: f for f in disc.initial()}
    assert sorted(found) == ["pci:0", "usb:0", "usb:1"]
    assert found["usb:1"].path == "1-2.4" and found["usb:1"].usb.needs_firmware
    assert found["usb:0"].delegate_device == "usb:0" and found["pci:0"].delegate_device == "pci:0"
    assert not disc.fell_back_to_cpu


def test_auto_without_tpu_falls_back_to_cpu_loudly(tmp_path, caplog):
    with caplog.at_level(logging.WARNING):
        disc = Discovery(parse_specs(["auto"]), _rig(tmp_path, MockUsbBackend()))
        found = disc.initial()
    assert [f.id for f in found] == ["cpu:0"] and disc.fell_back_to_cpu
    assert "NO EDGE TPU FOUND" in caplog.text


def test_pinned_specs_select_one_device(tmp_path):
    sysfs = FakeSysfs(tmp_path)
    sysfs.add_apex(0)
    sysfs.add_apex(1)
    bus = MockUsbBackend.with_devices(2)
    disc = Discovery(parse_specs(["usb:1", "pci:1"]), _rig(tmp_path, bus))
    assert sorted(f.id for f in disc.initial()) == ["pci:1", "usb:1"]
    assert disc.known["usb:1"].path == "1-2"


def test_hot_plug_lost_returned_added(tmp_path):
    bus = MockUsbBackend.with_devices(2)
    disc = Discovery(parse_specs(["usb"]), _rig(tmp_path, bus))
    disc.initial()
    assert disc.rescan().lost == []
    bus.unplug(0)
    result = disc.rescan()
    assert result.lost == ["usb:0"] and not disc.probe("usb:0") and disc.probe("usb:1")
    assert disc.rescan().lost == []  # reported once
    bus.replug(0)
    result = disc.rescan()
    assert [f.id for f in result.returned] == ["usb:0"] and result.returned[0].path == "1-1"
    bus.add(MockAccelerator(ports=(5,), mode="runtime"))
    result = disc.rescan()
    assert [(f.id, f.path) for f in result.added] == [("usb:2", "1-5")]


def test_pinned_device_absent_at_start_is_taken_when_it_appears(tmp_path):
    bus = MockUsbBackend()
    disc = Discovery(parse_specs(["usb:0"]), _rig(tmp_path, bus))
    [placeholder] = disc.initial()
    assert placeholder.id == "usb:0" and not disc.present["usb:0"]
    bus.add(MockAccelerator(ports=(3,), mode="runtime"))
    result = disc.rescan()
    assert [(f.id, f.path) for f in result.returned] == [("usb:0", "1-3")]


@pytest.mark.slow  # starts processes
def test_pool_takes_back_a_replugged_usb_device_with_firmware(tmp_path):
    firmware = tmp_path / "apex_latest_single_ep.bin"
    firmware.write_bytes(b"\x7fELF" + bytes(1000))
    bus = MockUsbBackend([MockAccelerator(ports=(1,), mode="dfu"), MockAccelerator(ports=(2,), mode="runtime")])
    events = []
    rig = {"usb": {"pyusb_backend": bus, "firmware": firmware, "executor_backend": "mock"}}
    pool = DevicePool(["usb"], PoolOptions(poll_interval_s=3600, rescan_interval_s=3600), rig)
    pool.on_change(lambda info, event: events.append((info.id, event, info.state)))
    pool.start()
    try:
        infos = {d.id: d for d in pool.devices()}
        assert infos["usb:0"].state == "ready" and infos["usb:0"].vid_pid == "18d1:9302"
        assert bus.accelerators[0].firmware == firmware.read_bytes()
        assert infos["usb:1"].path == "1-2" and infos["usb:1"].usb_speed == "super"
        bus.unplug(1)
        pool.poll()
        assert pool.device("usb:1").state == "lost" and pool.capacity("usb:1") == 0
        bus.replug(1)  # back in DFU mode: the pool pushes the firmware again
        pool.poll()
        _wait_state(pool, "usb:1", "ready")
        assert pool.device("usb:1").vid_pid == "18d1:9302"
        bus.add(MockAccelerator(ports=(4,), mode="runtime"))
        pool.poll()
        _wait_state(pool, "usb:2", "ready")
        assert ("usb:1", "lost", "lost") in events
        assert ("usb:1", "recovered", "ready") in events and ("usb:2", "added", "ready") in events
    finally:
        pool.stop()


def _wait_state(pool, device_id, state, timeout_s=30.0):
    import time

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if pool.device(device_id).state == state:
                return
        except Exception:
            pass
        time.sleep(0.01)
    raise AssertionError(f"{device_id} not {state}: {pool.device(device_id)}")


@pytest.mark.slow  # starts processes
def test_pool_follows_a_pcie_card_leaving_and_returning(tmp_path):
    sysfs = FakeSysfs(tmp_path)
    sysfs.add_apex(0)
    events = []
    pool = DevicePool(["pci"], PoolOptions(poll_interval_s=3600, rescan_interval_s=3600),
                      {"pci": {"sysfs_root": tmp_path, "executor_backend": "mock"}})
    pool.on_change(lambda info, event: events.append((info.id, event)))
    pool.start()
    try:
        pid = pool.device("pci:0").pid
        sysfs.remove_apex(0)
        pool.poll()
        info = pool.device("pci:0")
        assert (info.state, info.pid) == ("lost", None)
        pool.poll()
        assert events.count(("pci:0", "lost")) == 1
        sysfs.add_apex(0)
        sysfs.add_apex(1)
        pool.poll()
        _wait_state(pool, "pci:0", "ready")
        _wait_state(pool, "pci:1", "ready")
        assert pool.device("pci:0").pid != pid
        assert ("pci:0", "recovered") in events and ("pci:1", "added") in events
    finally:
        pool.stop()
