"""WorkerHandle on its own: the spawn process, shared-memory slots, control messages, death.

Replies are read by a reader thread, or by an asyncio loop (what the daemon does);
the behaviour tests run in both modes.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import threading
from pathlib import Path
from typing import Iterator, Optional

import numpy as np
import pytest

from edgetpud.hal import DeviceUnavailableError, ModelRuntimeError
from edgetpud.hal.executor import TensorSpec
from edgetpud.hal.backend import WorkerConfig
from edgetpud.hal.handle import WorkerHandle
from edgetpud.hal.wire import slot_layout

pytestmark = pytest.mark.slow  # starts worker processes or the daemon

SMALL = "mobilenet_v1_0.25_128_quant.tflite"


@contextlib.contextmanager
def running_loop() -> Iterator[asyncio.AbstractEventLoop]:
    """An asyncio loop running on its own thread, as the daemon's main loop is."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="test-loop", daemon=True)
    thread.start()
    try:
        yield loop
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        loop.close()


@pytest.fixture(params=["reader-thread", "event-loop"])
def reply_loop(request) -> Iterator[Optional[asyncio.AbstractEventLoop]]:
    if request.param == "reader-thread":
        yield None
    else:
        with running_loop() as loop:
            yield loop


def reader_threads() -> list:
    return [t for t in threading.enumerate() if t.name.endswith("-reader")]


def slot_names() -> set:
    """The shared-memory blocks that have a name (empty where /dev/shm does not list them)."""
    return set(os.listdir("/dev/shm")) if os.path.isdir("/dev/shm") else set()


def test_slot_layout_aligns_every_tensor():
    a = TensorSpec("a", 0, (1, 3), np.dtype(np.uint8))
    b = TensorSpec("b", 1, (2, 2), np.dtype(np.float32))
    c = TensorSpec("c", 2, (5,), np.dtype(np.int8))
    ins, outs, size = slot_layout([a, b], [c])
    assert ins == [0, 64] and outs == [128] and size == 192


def test_worker_round_trip_and_unload(test_data: Path, reply_loop):
    handle = WorkerHandle(WorkerConfig("cpu:0", "cpu", num_threads=1), slots=2, reply_loop=reply_loop)
    handle.start()
    try:
        assert bool(reader_threads()) == (reply_loop is None)  # with a loop, no reader thread
        assert handle.alive and handle.pid and handle.control("ping") == handle.pid
        named = slot_names()
        inputs, outputs = handle.load("m", str(test_data / SMALL), None)
        assert handle.capacity() == 2 and handle.models() == ["m"]
        assert slot_names() == named  # both sides mapped the slots, so their names are gone already
        rng = np.random.default_rng(1)
        images = [rng.integers(0, 255, inputs[0].shape, dtype=np.uint8) for _ in range(5)]
        futures = [handle.submit("m", [img]) for img in images]  # 2 in the worker, 3 queued
        results = [f.result(30)[0] for f in futures]
        assert all(f.invoke_s > 0 for f in futures)
        from edgetpud.hal.executor import TfliteExecutor

        local = TfliteExecutor(test_data / SMALL)
        for img, got in zip(images, results):
            np.testing.assert_array_equal(got, local.invoke([img])[0])
        # outputs are copies, not views of a slot: later requests through the same slots leave them alone
        kept = [r.copy() for r in results]
        assert not any(np.shares_memory(a, b) for i, a in enumerate(results) for b in results[i + 1:])
        again = [handle.submit("m", [255 - img]) for img in images[:2]]
        for f, img in zip(again, images):
            np.testing.assert_array_equal(f.result(30)[0], local.invoke([255 - img])[0])
        for got, before in zip(results, kept):
            np.testing.assert_array_equal(got, before)
        results[0][...] = 0  # and writing to one does not reach the next request through its slot
        np.testing.assert_array_equal(handle.submit("m", images[:1]).result(30)[0], kept[0])
        handle.unload("m")
        assert handle.models() == []
        assert isinstance(handle.submit("m", images[:1]).exception(5), ModelRuntimeError)
    finally:
        handle.stop()
    assert not handle.alive


def test_the_runtimes_own_lines_go_through_the_workers_log(test_data: Path, capfd):
    # Each worker start printed an untimestamped "INFO: Created TensorFlow Lite XNNPACK delegate for CPU."
    # straight to stderr, garbled when two workers started at once.
    for level, shown in ((logging.INFO, False), (logging.DEBUG, True)):
        handle = WorkerHandle(WorkerConfig("cpu:0", "cpu", num_threads=1, log_level=level))
        handle.start()
        try:
            handle.load("m", str(test_data / SMALL), None)
        finally:
            handle.stop()
        err = capfd.readouterr().err
        assert "INFO: Created TensorFlow Lite XNNPACK" not in err, err
        routed = [line for line in err.splitlines() if "Created TensorFlow Lite XNNPACK delegate" in line]
        assert bool(routed) == shown, err
        assert all(" worker[cpu:0] DEBUG edgetpud.hal.runtime: Created" in line for line in routed), routed


def test_load_error_comes_back_as_model_runtime_error(tmp_path: Path):
    bad = tmp_path / "bad.tflite"
    bad.write_bytes(b"not a flatbuffer")
    handle = WorkerHandle(WorkerConfig("cpu:0", "cpu"))
    handle.start()
    try:
        with pytest.raises(ModelRuntimeError):
            handle.load("bad", str(bad), None)
        assert handle.alive and handle.models() == []
    finally:
        handle.stop()


def test_death_fails_sent_requests_and_hands_back_queued_ones(test_data: Path, reply_loop):
    died = threading.Event()
    handed_back = []
    death_threads = []

    def on_death(handle, exitcode, queued):
        handed_back.extend(queued)
        death_threads.append(threading.current_thread().name)
        died.set()

    handle = WorkerHandle(WorkerConfig("mock:0", "mock", (("latency_s", 0.2),)), on_death=on_death, slots=2,
                          reply_loop=reply_loop)
    handle.start()
    try:
        inputs, _ = handle.load("m", str(test_data / SMALL), None)
        x = [np.zeros(inputs[0].shape, np.uint8)]
        futures = [handle.submit("m", x) for _ in range(5)]
        handle.kill(signal.SIGKILL)
        assert died.wait(30)
        assert death_threads[0] != "test-loop"  # reaping and restarting block: never on the loop
        assert handle.exitcode == -signal.SIGKILL and "SIGKILL" in handle.death_reason
        for f in futures[:2]:
            assert isinstance(f.exception(5), DeviceUnavailableError)
        assert [r.future for r in handed_back] == futures[2:]
        assert not any(f.done() for f in futures[2:])
        assert isinstance(handle.submit("m", x).exception(1), DeviceUnavailableError)
        with pytest.raises(DeviceUnavailableError):
            handle.control("ping")
    finally:
        handle.stop()
        for r in handed_back:
            r.future.cancel()


def test_unload_lets_requests_already_sent_finish(test_data: Path, reply_loop):
    handle = WorkerHandle(WorkerConfig("mock:0", "mock", (("latency_s", 0.05),)), slots=2, reply_loop=reply_loop)
    handle.start()
    try:
        inputs, _ = handle.load("m", str(test_data / SMALL), None)
        x = [np.zeros(inputs[0].shape, np.uint8)]
        futures = [handle.submit("m", x) for _ in range(4)]  # 2 sent, 2 queued
        handle.unload("m")
        outcomes = [type(f.exception(30)).__name__ if f.exception(30) else "ok" for f in futures]
        assert outcomes == ["ok", "ok", "ModelRuntimeError", "ModelRuntimeError"]
    finally:
        handle.stop()


def test_futures_resolve_on_the_loop_and_waiting_there_is_refused(test_data: Path):
    """With a reply loop, completions run on its thread; a blocking call from that thread would never return."""
    with running_loop() as loop:
        handle = WorkerHandle(WorkerConfig("mock:0", "mock", (("latency_s", 0.05),)), slots=2, reply_loop=loop)
        handle.start()
        try:
            inputs, _ = handle.load("m", str(test_data / SMALL), None)
            resolved_on = []
            future = handle.submit("m", [np.zeros(inputs[0].shape, np.uint8)])
            future.add_done_callback(lambda f: resolved_on.append(threading.current_thread().name))
            assert future.result(30)[0].shape == (1, 1001)
            assert resolved_on == ["test-loop"]

            async def ping_on_the_loop():
                return handle.control("ping")

            with pytest.raises(RuntimeError, match="run_in_executor"):
                asyncio.run_coroutine_threadsafe(ping_on_the_loop(), loop).result(10)
            assert handle.control("ping") == handle.pid  # from any other thread it works
        finally:
            handle.stop()
        assert not handle.alive


def test_stop_after_the_reply_loop_closed_still_ends_the_worker(test_data: Path):
    with running_loop() as loop:
        handle = WorkerHandle(WorkerConfig("mock:0", "mock"), slots=2, reply_loop=loop)
        handle.start()
        assert handle.control("ping") == handle.pid
    assert loop.is_closed()
    handle.stop(timeout_s=2)  # nobody reads its pipe now: the worker is killed and reaped
    assert not handle.alive and handle.exitcode is not None
    with pytest.raises(DeviceUnavailableError):
        handle.control("ping")
