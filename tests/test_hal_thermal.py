"""Temperature, trip points and throttle levels: pcie.py on a fake apex tree, thermal.py, the pool."""
from __future__ import annotations

import logging

import pytest

from edgetpud.hal import DevicePool, PoolOptions
from edgetpud.hal.pcie import find_apex_devices, read_telemetry
from edgetpud.hal.thermal import ThermalMonitor, throttle_level
from edgetpud.mock_device.sysfs import FakeSysfs


def test_throttle_level_counts_trip_points_exceeded():
    trips = [85.0, 90.0, 95.0]
    assert [throttle_level(t, trips) for t in (20, 85, 85.1, 90.5, 95.5)] == [0, 0, 1, 2, 3]
    assert throttle_level(None, trips) is None


def test_fake_tree_is_read_like_the_driver(tmp_path):
    sysfs = FakeSysfs(tmp_path)
    sysfs.add_apex(1, temperature_c=51.25)
    sysfs.add_apex(0)
    (tmp_path / "class" / "apex" / "not_apex").mkdir()
    devices = find_apex_devices(tmp_path)
    assert [(d.index, d.dev_path) for d in devices] == [(0, "/dev/apex_0"), (1, "/dev/apex_1")]
    reading = read_telemetry(devices[1].sysfs_dir)
    assert reading.temperature_c == 51.25
    assert reading.trip_points_c == [85.0, 90.0, 95.0]
    assert reading.hw_temp_warn == {"hw_temp_warn1": 100.0, "hw_temp_warn2": 105.0}
    sysfs.set_trip_point(0, 0, 70.0)
    assert read_telemetry(devices[0].sysfs_dir).trip_points_c[0] == 70.0


def test_missing_driver_and_files(tmp_path):
    assert find_apex_devices(tmp_path) == []
    node = tmp_path / "class" / "apex" / "apex_0"
    node.mkdir(parents=True)
    reading = read_telemetry(node)
    assert reading.temperature_c is None and reading.trip_points_c == [85.0, 90.0, 95.0]


def test_default_root_is_sys():
    from edgetpud.hal.pcie import apex_class_dir

    assert str(apex_class_dir()) == "/sys/class/apex"


def test_monitor_logs_each_crossing_once(caplog):
    monitor = ThermalMonitor("pci:0")
    trips = [85.0, 90.0, 95.0]
    with caplog.at_level(logging.INFO, logger="edgetpud.hal.thermal"):
        changes = [monitor.update(t, trips) for t in (50, 60, 86, 87, 88, 91, 91, 96, 96, 70, 70)]
    assert changes == [False, False, True, False, False, True, False, True, False, True, False]
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 4
    assert [r.levelname for r in caplog.records] == ["WARNING", "WARNING", "WARNING", "INFO"]
    assert "level 1" in messages[0] and "level 2" in messages[1] and "level 3" in messages[2]
    assert "back down to 0" in messages[3]


@pytest.mark.slow  # starts processes
def test_pool_reports_throttle_levels_and_logs_once(tmp_path, caplog):
    sysfs = FakeSysfs(tmp_path)
    sysfs.add_apex(0, temperature_c=40.0)
    events = []
    pool = DevicePool(["pci"], PoolOptions(poll_interval_s=3600), {"pci": {"sysfs_root": tmp_path, "executor_backend": "mock"}})
    pool.on_change(lambda info, event: events.append((event, info.throttle_level, info.state)))
    pool.start()
    try:
        info = pool.device("pci:0")
        assert (info.kind, info.path, info.temperature_c, info.throttle_level, info.state) == \
               ("pci", "/dev/apex_0", 40.0, 0, "ready")
        with caplog.at_level(logging.INFO, logger="edgetpud.hal.thermal"):
            for temp, level in ((86.0, 1), (91.0, 2), (96.0, 3), (60.0, 0)):
                sysfs.set_temperature(0, temp)
                for _ in range(3):  # several polls (and requests) at the same temperature
                    pool.poll()
                info = pool.device("pci:0")
                assert (info.temperature_c, info.throttle_level) == (temp, level)
                assert info.state == ("throttled" if level else "ready")
        crossings = [r for r in caplog.records if r.name == "edgetpud.hal.thermal"]
        assert len(crossings) == 4
        assert [e for e in events if e[0] == "throttled"] == [
            ("throttled", 1, "throttled"), ("throttled", 2, "throttled"),
            ("throttled", 3, "throttled"), ("throttled", 0, "ready")]
    finally:
        pool.stop()


@pytest.mark.slow  # starts processes
def test_mock_control_sets_temperature_of_a_mock_device():
    pool = DevicePool(["mock:1"], PoolOptions(poll_interval_s=3600))
    pool.start()
    try:
        pool.fault_control.set_temperature("mock:0", 92.5)
        pool.poll()
        info = pool.device("mock:0")
        assert (info.temperature_c, info.throttle_level, info.state) == (92.5, 2, "throttled")
        with pytest.raises(KeyError):
            pool.fault_control.set_temperature("mock:5", 50.0)
    finally:
        pool.stop()
