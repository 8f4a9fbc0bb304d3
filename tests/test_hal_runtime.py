"""The real paths: libedgetpu as a delegate, pyusb's default backend, /sys; and what a missing runtime says."""
from __future__ import annotations

import ctypes
import ctypes.util

import pytest

from edgetpud.hal import DevicePool, DeviceUnavailableError, PoolOptions, RuntimeMissingError
from edgetpud.hal import runtime as hal_runtime
from edgetpud.mock_device.sysfs import FakeSysfs


def _no_libedgetpu(monkeypatch):
    real_cdll = ctypes.CDLL

    def cdll(name, *args, **kwargs):
        if "edgetpu" in str(name):
            raise OSError(f"{name}: cannot open shared object file: No such file or directory")
        return real_cdll(name, *args, **kwargs)

    monkeypatch.setattr(ctypes.util, "find_library", lambda name: None)
    monkeypatch.setattr(ctypes, "CDLL", cdll)


def test_missing_libedgetpu_says_what_to_install(monkeypatch):
    _no_libedgetpu(monkeypatch)
    with pytest.raises(RuntimeMissingError) as err:
        hal_runtime.load_edgetpu_delegate("usb:0")
    message = str(err.value)
    assert "libedgetpu.so.1" in message and "libedgetpu1-std" in message and "--device mock" in message


def test_delegate_is_loaded_from_libedgetpu_with_device_and_options(monkeypatch):
    calls = []
    runtime = hal_runtime.Runtime("fake", object, lambda library, options: calls.append((library, options)) or "D")
    monkeypatch.setattr(hal_runtime, "find_runtime", lambda: runtime)
    monkeypatch.setattr(ctypes.util, "find_library", lambda name: "libedgetpu.so.1")
    assert hal_runtime.load_edgetpu_delegate("pci:1", {"Performance": "max"}) == "D"
    assert calls == [("libedgetpu.so.1", {"Performance": "max", "device": "pci:1"})]


@pytest.mark.slow  # starts processes
def test_pool_on_a_tpu_without_libedgetpu_reports_failed_with_the_fix(tmp_path):
    """A pci device found under a fake /sys: its worker tries the real delegate and cannot load it."""
    if ctypes.util.find_library("edgetpu"):
        pytest.skip("libedgetpu is installed on this host")
    FakeSysfs(tmp_path).add_apex(0)
    events = []
    pool = DevicePool(["pci"], PoolOptions(poll_interval_s=3600), {"pci": {"sysfs_root": tmp_path}})
    pool.on_change(lambda info, event: events.append((info.id, event)))
    pool.start()
    try:
        info = pool.device("pci:0")
        assert info.state == "failed" and "libedgetpu1-std" in info.error
        assert ("pci:0", "failed") in events
        with pytest.raises(DeviceUnavailableError, match="libedgetpu1-std"):
            pool.load("pci:0", "m", "model_edgetpu.tflite", "model.tflite")
        assert pool.capacity("pci:0") == 0
    finally:
        pool.stop()


def test_defaults_are_the_real_host(monkeypatch):
    """No backend and no root given: pyusb's own lookup and /sys, the lines the mock drives."""
    import usb.core

    from edgetpud.hal import pcie, usb as hal_usb
    from edgetpud.hal.discovery import Discovery, parse_specs

    seen = []
    monkeypatch.setattr(usb.core, "find", lambda **kw: seen.append(kw["backend"]) or iter(()))
    monkeypatch.setattr(pcie, "find_apex_devices", lambda root=None, dev_root="/dev": seen.append(root) or [])
    disc = Discovery(parse_specs(["auto"]))
    assert [f.id for f in disc.initial()] == ["cpu:0"]
    assert seen == [None, None]  # pyusb default backend, sysfs root None -> /sys
    assert str(pcie.apex_class_dir(None)) == "/sys/class/apex"
    assert hal_usb.RUNTIME_VID == 0x18D1 and hal_usb.DFU_PID == 0x089A


def test_one_place_decides_which_executor_runs_on_which_device(test_data):
    from edgetpud.hal.errors import DeviceInitError
    from edgetpud.hal.executor import TfliteExecutor, open_executor
    from edgetpud.mock_device.executor import MockTpuExecutor

    compiled = test_data / "mobilenet_v1_0.25_128_quant_edgetpu.tflite"
    twin = test_data / "mobilenet_v1_0.25_128_quant.tflite"
    cpu = open_executor("cpu", compiled, twin)
    mock = open_executor("mock", compiled, twin, device_id="mock:3")
    try:
        assert type(cpu) is TfliteExecutor and cpu.inputs[0].shape == (1, 128, 128, 3)  # the twin, not the compiled file
        assert isinstance(mock, MockTpuExecutor) and mock.device_id == "mock:3"
    finally:
        cpu.close()
        mock.close()
    with pytest.raises(DeviceInitError, match="needs the libedgetpu delegate"):
        open_executor("usb", compiled, twin, device_id="usb:0")
