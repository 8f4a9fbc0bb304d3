"""DevicePool contract on the CPU and mock backends: start, load, submit, capacity, stop."""
from __future__ import annotations

import multiprocessing
from concurrent.futures import Future
from pathlib import Path

import numpy as np
import pytest

from edgetpud.hal import DeviceInfo, DevicePool, DeviceSpecError, DeviceUnavailableError, ModelRuntimeError, PoolOptions

pytestmark = pytest.mark.slow  # starts worker processes or the daemon

SMALL = "mobilenet_v1_0.25_128_quant"


@pytest.fixture
def small_model(test_data: Path) -> tuple:
    return test_data / f"{SMALL}_edgetpu.tflite", test_data / f"{SMALL}.tflite"


def _zeros(specs):
    return [np.zeros(s.shape, s.dtype) for s in specs]


def test_cpu_pool_runs_the_twin_in_a_worker(small_model):
    compiled, twin = small_model
    pool = DevicePool(["cpu"])
    pool.start()
    try:
        [info] = pool.devices()
        assert (info.id, info.kind, info.state) == ("cpu:0", "cpu", "ready")
        assert info.pid is not None and info.pid != multiprocessing.current_process().pid
        inputs, outputs = pool.load("cpu:0", "m", compiled, twin)
        assert inputs[0].shape == (1, 128, 128, 3) and outputs[0].shape == (1, 1001)
        image = np.random.default_rng(0).integers(0, 255, inputs[0].shape, dtype=np.uint8)
        future = pool.submit("cpu:0", "m", [image])
        assert isinstance(future, Future)
        [scores] = future.result(30)
        assert scores.shape == (1, 1001) and scores.dtype == np.uint8
        from edgetpud.hal.executor import TfliteExecutor

        expected = TfliteExecutor(twin).invoke([image])[0]
        np.testing.assert_array_equal(scores, expected)
        assert pool.device("cpu:0").models == ["m"]
    finally:
        pool.stop()
    assert not multiprocessing.active_children()


def test_mock_pool_contract(small_model):
    compiled, twin = small_model
    with DevicePool(["mock:2"], PoolOptions(slots=3)) as pool:
        infos = pool.devices()
        assert [d.id for d in infos] == ["mock:0", "mock:1"]
        for d in infos:
            data = d.to_dict()
            for key in ("id", "kind", "state", "temperature_c", "throttle_level", "path", "models", "restarts"):
                assert key in data
            assert data["kind"] == "mock" and data["state"] == "ready" and data["vid_pid"] == "18d1:9302"
        inputs, _ = pool.load("mock:1", "m", compiled, twin)
        assert pool.capacity("mock:1") == 3
        futures = [pool.submit("mock:1", "m", _zeros(inputs)) for _ in range(8)]
        results = [f.result(30)[0] for f in futures]
        assert all(np.array_equal(r, results[0]) for r in results)
        pool.unload("mock:1", "m")
        assert pool.device("mock:1").models == []
        assert isinstance(pool.submit("mock:1", "m", _zeros(inputs)).exception(5), ModelRuntimeError)


def test_bad_input_fails_the_future_not_the_worker(small_model):
    compiled, twin = small_model
    with DevicePool(["mock:1"]) as pool:
        inputs, _ = pool.load("mock:0", "m", compiled, twin)
        wrong = np.zeros((1, 64, 64, 3), np.uint8)
        assert isinstance(pool.submit("mock:0", "m", [wrong]).exception(5), ModelRuntimeError)
        assert isinstance(pool.submit("mock:0", "m", [wrong.astype(np.float32)]).exception(5), ModelRuntimeError)
        assert pool.submit("mock:0", "m", _zeros(inputs)).result(30)[0].shape == (1, 1001)


def test_unknown_device_and_bad_specs():
    with pytest.raises(DeviceSpecError):
        DevicePool(["tpu:0"])
    with pytest.raises(DeviceSpecError):
        DevicePool(["mock:2", "usb"])
    with DevicePool(["cpu"]) as pool:
        assert isinstance(pool.submit("usb:7", "m", []).exception(1), DeviceUnavailableError)
        assert pool.capacity("usb:7") == 0
        with pytest.raises(DeviceUnavailableError):
            pool.load("usb:7", "m", "x.tflite", None)


def test_device_info_to_dict_is_json_ready():
    import json

    info = DeviceInfo(id="usb:0", kind="usb", index=0, path="2-1.3", usb_ports=(1, 3), models=["a"])
    data = json.loads(json.dumps(info.to_dict()))
    assert data["usb_ports"] == [1, 3] and data["models"] == ["a"] and data["temperature_c"] is None


def test_a_model_that_cannot_be_reloaded_is_dropped_not_the_device(small_model, tmp_path):
    import os
    import shutil
    import signal
    import time

    compiled, twin = small_model
    copy = tmp_path / "twin.tflite"
    shutil.copy(twin, copy)
    with DevicePool(["mock:1"], backend_options={"mock": {"state_dir": tmp_path / "world"}}) as pool:
        pool.load("mock:0", "kept", compiled, twin)
        pool.load("mock:0", "gone", compiled, copy)
        copy.unlink()
        os.kill(pool.device("mock:0").pid, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and pool.device("mock:0").restarts == 0:
            time.sleep(0.01)
        info = pool.device("mock:0")
        assert info.state == "ready" and info.models == ["kept"]
    assert (tmp_path / "world").is_dir()  # a given state folder is the caller's to keep


def test_a_reused_state_folder_starts_a_fresh_world(tmp_path):
    from edgetpud.mock_device.control import MockControl
    from edgetpud.mock_device.state import MockWorld

    MockWorld.create(tmp_path, 3)
    MockControl(tmp_path).unplug("mock:1")
    MockControl(tmp_path).inject("mock:0", "abort")
    with DevicePool(["mock:2"], backend_options={"mock": {"state_dir": tmp_path}}) as pool:
        assert [(d.id, d.state) for d in pool.devices()] == [("mock:0", "ready"), ("mock:1", "ready")]
        assert [d["faults"] for d in pool.fault_control.devices()] == [[], []]


def test_busy_means_every_slot_is_taken(small_model):
    compiled, twin = small_model
    with DevicePool(["mock:1"], PoolOptions(slots=2), {"mock": {"latency_s": 0.2}}) as pool:
        inputs, _ = pool.load("mock:0", "m", compiled, twin)
        first = pool.submit("mock:0", "m", _zeros(inputs))
        info = pool.device("mock:0")
        assert (info.state, info.inflight, info.in_service) == ("ready", 1, True)
        assert pool.capacity("mock:0") == 1
        second = pool.submit("mock:0", "m", _zeros(inputs))
        assert pool.device("mock:0").state == "busy" and pool.capacity("mock:0") == 0
        first.result(30), second.result(30)
        assert pool.device("mock:0").state == "ready" and pool.capacity("mock:0") == 2
