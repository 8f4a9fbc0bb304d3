"""Workers dying under load: SIGKILL, SIGABRT (libedgetpu's way), hangs, errors, unplug."""
from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from edgetpud.hal import DevicePool, DeviceIOError, DeviceTimeoutError, DeviceUnavailableError, PoolOptions

from test_worker import running_loop

pytestmark = pytest.mark.slow  # starts worker processes or the daemon

SMALL = "mobilenet_v1_0.25_128_quant"


@pytest.fixture
def model(test_data: Path) -> tuple:
    return test_data / f"{SMALL}_edgetpu.tflite", test_data / f"{SMALL}.tflite"


def wait_for(predicate, timeout_s=30.0, what="condition"):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}")


def _pool(model, count=2, reply_loop=None, latency_s=0.05, **options):
    options.setdefault("poll_interval_s", 0.05)
    options.setdefault("rescan_interval_s", 0.05)
    pool = DevicePool([f"mock:{count}"], PoolOptions(slots=2, **options), {"mock": {"latency_s": latency_s}})
    pool.read_replies_on(reply_loop)
    events = []
    pool.on_change(lambda info, event: events.append((info.id, event)))
    pool.start()
    for i in range(count):
        pool.load(f"mock:{i}", "m", *model)
    return pool, events


def _inputs(pool):
    return [np.zeros((1, 128, 128, 3), np.uint8)]


def _outcome(future, timeout_s=30.0):
    try:
        future.result(timeout_s)
        return "ok"
    except Exception as exc:  # noqa: BLE001 - the test classifies it
        return type(exc).__name__


@pytest.mark.parametrize("replies", ["reader-thread", "event-loop"])
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGABRT])
def test_killed_worker_restarts_and_others_keep_serving(model, sig, replies):
    with contextlib.ExitStack() as stack:
        loop = stack.enter_context(running_loop()) if replies == "event-loop" else None
        _killed_worker_restarts_and_others_keep_serving(model, sig, loop)


def _killed_worker_restarts_and_others_keep_serving(model, sig, reply_loop):
    pool, events = _pool(model, reply_loop=reply_loop)
    try:
        x = _inputs(pool)
        victim_pid = pool.device("mock:0").pid
        hit = [pool.submit("mock:0", "m", x) for _ in range(6)]  # 2 in the worker, 4 queued
        other = [pool.submit("mock:1", "m", x) for _ in range(6)]
        wait_for(lambda: pool.device("mock:0").inflight == 6, what="requests in flight")
        os.kill(victim_pid, sig)
        outcomes = [_outcome(f) for f in hit]
        # the two the worker held fail; the queued ones ran on the restarted worker
        assert outcomes.count("DeviceUnavailableError") == 2 and outcomes.count("ok") == 4, outcomes
        assert [_outcome(f) for f in other] == ["ok"] * 6
        failure = hit[0].exception(1) or hit[1].exception(1)
        assert signal.Signals(sig).name in str(failure)
        wait_for(lambda: pool.device("mock:0").state == "ready", what="restart")
        info = pool.device("mock:0")
        assert info.restarts == 1 and info.pid != victim_pid and info.models == ["m"]
        assert pool.submit("mock:0", "m", x).result(30)[0].shape == (1, 1001)
        assert ("mock:0", "failed") in events and ("mock:0", "restarted") in events
        assert [e for e in events if e[0] == "mock:1"] == [("mock:1", "added")]
    finally:
        pool.stop()


def test_abort_mid_invoke_like_libedgetpu(model):
    pool, events = _pool(model)
    try:
        x = _inputs(pool)
        pool.fault_control.inject("mock:0", "abort")
        first = pool.submit("mock:0", "m", x)
        with pytest.raises(DeviceUnavailableError, match="SIGABRT"):
            first.result(30)
        wait_for(lambda: pool.device("mock:0").restarts == 1 and pool.device("mock:0").state == "ready")
        assert pool.submit("mock:0", "m", x).result(30)[0].shape == (1, 1001)
    finally:
        pool.stop()


def test_error_and_timeout_faults_keep_the_worker(model):
    pool, _ = _pool(model, count=1, latency_s=None)
    try:
        x = _inputs(pool)
        pid = pool.device("mock:0").pid
        ctl = pool.fault_control
        ctl.inject("mock:0", "error", message="bulk transfer failed")
        with pytest.raises(DeviceIOError, match="bulk transfer failed"):
            pool.submit("mock:0", "m", x).result(30)
        ctl.inject("mock:0", "timeout")
        with pytest.raises(DeviceTimeoutError):
            pool.submit("mock:0", "m", x).result(30)
        assert pool.submit("mock:0", "m", x).result(30)[0].shape == (1, 1001)
        assert pool.device("mock:0").pid == pid and pool.device("mock:0").restarts == 0
        assert ctl.devices()[0]["faults"] == []
    finally:
        pool.stop()


def test_hung_worker_is_killed_by_the_watchdog(model):
    pool, _ = _pool(model, count=1, invoke_timeout_s=0.3)
    try:
        x = _inputs(pool)
        pool.fault_control.inject("mock:0", "hang")
        with pytest.raises(DeviceUnavailableError, match="did not answer within 0.3 s .invoke_timeout_s.; its worker is being restarted"):
            pool.submit("mock:0", "m", x).result(30)
        wait_for(lambda: pool.device("mock:0").state == "ready" and pool.device("mock:0").restarts == 1)
        assert pool.submit("mock:0", "m", x).result(30)[0].shape == (1, 1001)
    finally:
        pool.stop()


def test_unplug_and_replug_while_requests_run(model):
    pool, events = _pool(model, latency_s=0.01)
    stop = threading.Event()
    outcomes = {"mock:0": [], "mock:1": []}

    def load(device_id):
        x = _inputs(pool)
        while not stop.is_set():
            outcomes[device_id].append(_outcome(pool.submit(device_id, "m", x)))
            time.sleep(0.002)

    threads = [threading.Thread(target=load, args=(d,)) for d in outcomes]
    for t in threads:
        t.start()
    try:
        wait_for(lambda: len(outcomes["mock:0"]) > 5, what="traffic")
        pool.fault_control.unplug("mock:0")
        wait_for(lambda: pool.device("mock:0").state == "lost", what="lost")
        assert pool.capacity("mock:0") == 0
        served_while_lost = len(outcomes["mock:1"])
        wait_for(lambda: len(outcomes["mock:1"]) > served_while_lost + 5, what="mock:1 serving on")
        pool.fault_control.replug("mock:0")
        wait_for(lambda: pool.device("mock:0").state in ("ready", "busy"), what="recovered")
        back = len(outcomes["mock:0"])
        wait_for(lambda: outcomes["mock:0"][back:].count("ok") > 3, what="mock:0 serving again")
    finally:
        stop.set()
        for t in threads:
            t.join(30)
        pool.stop()
    assert set(outcomes["mock:1"]) == {"ok"}
    assert set(outcomes["mock:0"]) <= {"ok", "DeviceUnavailableError"}
    assert "DeviceUnavailableError" in outcomes["mock:0"]
    assert ("mock:0", "lost") in events and ("mock:0", "recovered") in events
    assert pool.device("mock:0").models == ["m"]


def test_stop_fails_pending_requests(model):
    pool, _ = _pool(model, count=1, latency_s=0.2)
    x = _inputs(pool)
    futures = [pool.submit("mock:0", "m", x) for _ in range(5)]
    pool.stop()
    outcomes = [_outcome(f, 10) for f in futures]
    assert set(outcomes) <= {"ok", "DeviceUnavailableError"} and "DeviceUnavailableError" in outcomes


def test_warm_spare_takes_over_a_dead_worker(model):
    pool = DevicePool(["mock:1"], PoolOptions(warm_spare=True, poll_interval_s=3600, rescan_interval_s=3600))
    pool.start()
    try:
        pool.load("mock:0", "m", *model)
        spare_pid = pool._spare._process.pid  # the idle process the next restart will use
        os.kill(pool.device("mock:0").pid, signal.SIGKILL)
        wait_for(lambda: pool.device("mock:0").restarts == 1, what="restart")
        assert pool.device("mock:0").pid == spare_pid and pool.device("mock:0").models == ["m"]
        assert pool.submit("mock:0", "m", _inputs(pool)).result(30)[0].shape == (1, 1001)
        wait_for(lambda: pool._spare is not None, what="a new spare")
        assert pool._spare._process.pid != spare_pid
    finally:
        pool.stop()


def test_stop_during_restart_backoff_is_prompt(model):
    pool = DevicePool(["mock:1"], PoolOptions(slots=2, backoff_s=(30.0, 60.0), poll_interval_s=3600,
                                              rescan_interval_s=3600), {"mock": {"latency_s": 0.2}})
    pool.start()
    try:
        pool.load("mock:0", "m", *model)
        futures = [pool.submit("mock:0", "m", _inputs(pool)) for _ in range(4)]  # 2 sent, 2 queued
        os.kill(pool.device("mock:0").pid, signal.SIGKILL)
        wait_for(lambda: pool.device("mock:0").state == "failed", what="death")
    finally:
        start = time.monotonic()
        pool.stop()
    assert time.monotonic() - start < 10
    assert [_outcome(f, 5) for f in futures] == ["DeviceUnavailableError"] * 4


def test_cancelled_queued_requests_are_skipped_by_unload_and_by_worker_death(model):
    """A caller may cancel a request still queued (concurrent.futures allows it until it runs).

    Unloading its model, or losing its worker, must then fail only the others: failing a
    cancelled future would raise on the reader or life-cycle thread and leak its slots.
    """
    pool, events = _pool(model, count=1, latency_s=0.2)
    ctl = pool.fault_control
    # every invocation on the mock device pops one queued fault: near-zero "hang" faults count them
    marker = {"seconds": 1e-6}

    def faults_left():
        return len(ctl.world.read("mock:0")["faults"])
    try:
        x = _inputs(pool)
        ctl.inject("mock:0", "hang", 10, **marker)
        futures = [pool.submit("mock:0", "m", x) for _ in range(4)]  # 2 slots: the last two queue
        assert futures[3].cancel() and not futures[0].cancel(), "only a queued request can be cancelled"
        pool.unload("mock:0", "m")
        assert futures[3].cancelled()
        assert [_outcome(f) for f in futures[:3]] == ["ok", "ok", "ModelRuntimeError"]
        assert faults_left() == 8, "only the two requests sent before the unload ran"

        pool.load("mock:0", "m", *model)
        ctl.clear_faults("mock:0")
        ctl.inject("mock:0", "hang", 1, seconds=60)  # holds the first request in the worker until the kill
        ctl.inject("mock:0", "hang", 10, **marker)
        queued = [pool.submit("mock:0", "m", x) for _ in range(4)]
        assert queued[3].cancel()
        wait_for(lambda: faults_left() == 10, what="the first request to start")
        os.kill(pool.device("mock:0").pid, signal.SIGKILL)
        assert queued[3].cancelled()
        # the two sent fail with the worker; the queued one runs on its successor, the cancelled one never
        assert [_outcome(f) for f in queued[:3]] == ["DeviceUnavailableError", "DeviceUnavailableError", "ok"]
        wait_for(lambda: pool.device("mock:0").inflight == 0, what="the device to be idle")
        assert faults_left() == 9, "the cancelled request ran on the restarted worker"
        wait_for(lambda: ("mock:0", "restarted") in events, what="the restart")
        wait_for(lambda: _outcome(pool.submit("mock:0", "m", x)) == "ok", what="the device serving again")
    finally:
        pool.stop()
