"""MockTpuExecutor and the shared mock world, in-process (the abort fault is tested through workers)."""
from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from edgetpud.hal import DeviceIOError, DeviceTimeoutError, ModelRuntimeError
from edgetpud.mock_device.control import MockControl
from edgetpud.mock_device.executor import MockTpuExecutor
from edgetpud.mock_device.state import MockWorld

SMALL = "mobilenet_v1_0.25_128_quant"


@pytest.fixture
def world(tmp_path: Path) -> MockWorld:
    return MockWorld.create(tmp_path / "mock", 2)


def _x(executor):
    return [np.zeros(executor.inputs[0].shape, np.uint8)]


def test_latency_is_slept_not_burnt(test_data: Path):
    executor = MockTpuExecutor(test_data / f"{SMALL}.tflite", latency_s=0.05)
    x = _x(executor)
    executor.invoke(x)
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(4):
        executor.invoke(x)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    assert wall >= 4 * 0.05
    assert cpu < 0.5 * wall, f"burnt {cpu:.3f} s of CPU in {wall:.3f} s"


def test_outputs_are_the_cpu_twin(test_data: Path):
    from edgetpud.hal import TfliteExecutor

    twin = test_data / f"{SMALL}.tflite"
    x = [np.random.default_rng(3).integers(0, 255, (1, 128, 128, 3), dtype=np.uint8)]
    np.testing.assert_array_equal(MockTpuExecutor(twin).invoke(x)[0], TfliteExecutor(twin).invoke(x)[0])


def test_compiled_model_without_twin_is_refused(test_data: Path):
    with pytest.raises(ModelRuntimeError, match="CPU twin"):
        MockTpuExecutor(test_data / f"{SMALL}_edgetpu.tflite")


def test_world_faults_and_latency(test_data: Path, world: MockWorld):
    ctl = MockControl(world.root)
    executor = MockTpuExecutor(test_data / f"{SMALL}.tflite", device_id="mock:1", state_dir=world.root)
    x = _x(executor)
    ctl.inject("mock:1", "error", count=2, message="boom")
    ctl.inject("mock:0", "error")  # another device's fault is not ours
    for _ in range(2):
        with pytest.raises(DeviceIOError, match="boom"):
            executor.invoke(x)
    executor.invoke(x)
    ctl.inject("mock:1", "timeout", seconds=0.01)
    with pytest.raises(DeviceTimeoutError):
        executor.invoke(x)
    ctl.inject("mock:1", "hang", seconds=0.05)
    start = time.perf_counter()
    executor.invoke(x)
    assert time.perf_counter() - start >= 0.05
    ctl.set_latency("mock:1", 0.03)
    start = time.perf_counter()
    executor.invoke(x)
    assert time.perf_counter() - start >= 0.03
    listing = {d["id"]: d for d in ctl.devices()}
    assert listing["mock:1"]["faults"] == [] and listing["mock:1"]["latency_s"] == 0.03
    assert listing["mock:0"]["faults"] == [{"fault": "error"}] and listing["mock:0"]["temperature_c"] == 45.0


def test_control_validates(world: MockWorld):
    ctl = MockControl(world.root)
    with pytest.raises(ValueError):
        ctl.inject("mock:0", "explode")
    with pytest.raises(KeyError):
        ctl.inject("mock:9", "abort")
    with pytest.raises(KeyError):
        ctl.unplug("usb:0")
    with pytest.raises(ValueError):
        ctl.set_latency("mock:0", -1)
    ctl.unplug("mock:0")
    assert not world.plugged("mock:0") and world.plugged("mock:1")
    ctl.replug("mock:0")
    assert world.plugged("mock:0")


def test_a_fault_is_taken_exactly_once(world: MockWorld):
    MockControl(world.root).inject("mock:0", "error", count=20)
    taken = []

    def take():
        other = MockWorld(world.root)  # as another process would: its own cache
        while True:
            fault = other.take_fault("mock:0", ("error",))
            if fault is None:
                return
            taken.append(fault)

    threads = [threading.Thread(target=take) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(taken) == 20
    assert json.loads((world.root / "devices" / "mock_0.json").read_text())["faults"] == []


def test_an_unplugged_device_fails_before_it_takes_a_fault(world: MockWorld):
    """One state read answers an invocation; unplugged, the queued fault waits for the replug."""
    ctl = MockControl(world.root)
    ctl.inject("mock:0", "error", message="later")
    ctl.set_latency("mock:0", 0.02)
    ctl.unplug("mock:0")
    assert world.for_invoke("mock:0", ("error",)) == (False, 0.02, None)
    ctl.replug("mock:0")
    plugged, latency, fault = world.for_invoke("mock:0", ("error",))
    assert plugged and latency == 0.02 and fault == {"fault": "error", "message": "later"}
    assert world.for_invoke("mock:0", ("error",)) == (True, 0.02, None)
