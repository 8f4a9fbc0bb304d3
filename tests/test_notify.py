"""sd_notify: datagrams on a real unix socket, abstract names, and the watchdog loop."""
from __future__ import annotations

import asyncio
import os
import socket
import uuid

import pytest

from edgetpud.daemon.notify import Notifier


@pytest.fixture
def listener(tmp_path):
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    path = str(tmp_path / "notify.sock")
    sock.bind(path)
    sock.settimeout(2.0)
    yield path, sock
    sock.close()


def test_disabled_without_notify_socket():
    notifier = Notifier({})
    assert not notifier.enabled
    assert notifier.ready("x") is False
    assert notifier.watchdog_interval is None


def test_ready_and_status_lines(listener):
    path, sock = listener
    notifier = Notifier({"NOTIFY_SOCKET": path})
    assert notifier.ready("serving 2 models")
    assert sock.recv(4096).decode().split("\n") == ["READY=1", "STATUS=serving 2 models"]
    assert notifier.stopping()
    assert sock.recv(4096) == b"STOPPING=1"
    assert notifier.status("draining")
    assert sock.recv(4096) == b"STATUS=draining"


def test_abstract_namespace():
    name = f"edgetpud-test-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(2.0)
        assert Notifier({"NOTIFY_SOCKET": "@" + name}).watchdog()
        assert sock.recv(100) == b"WATCHDOG=1"


def test_unreachable_socket_does_not_raise(tmp_path):
    assert Notifier({"NOTIFY_SOCKET": str(tmp_path / "gone.sock")}).ready() is False


def test_watchdog_interval_is_half_and_respects_pid(listener):
    path, _ = listener
    assert Notifier({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "4000000"}).watchdog_interval == 2.0
    other_pid = {"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "4000000", "WATCHDOG_PID": str(os.getpid() + 1)}
    assert Notifier(other_pid).watchdog_interval is None


def test_watchdog_loop_pings_only_while_healthy(listener):
    path, sock = listener
    sock.setblocking(False)
    notifier = Notifier({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "20000"})  # ping every 10 ms
    state = {"healthy": True, "checks": 0}

    def healthy() -> bool:
        state["checks"] += 1
        return state["healthy"] and state["checks"] <= 3

    async def run() -> None:
        task = asyncio.ensure_future(notifier.watchdog_loop(healthy))
        for _ in range(200):
            await asyncio.sleep(0.005)
            if state["checks"] >= 6:
                break
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(run())
    pings = []
    while True:
        try:
            pings.append(sock.recv(100))
        except BlockingIOError:
            break
    assert state["checks"] >= 6
    assert pings == [b"WATCHDOG=1"] * 3


def test_a_full_notify_socket_does_not_block_the_sender(tmp_path):
    """A service manager that does not read (busy, or stuck) must not stall the daemon's event loop for good."""
    import threading

    path = str(tmp_path / "full.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock, \
            socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as filler:
        sock.bind(path)  # never read
        filler.connect(path)
        filler.setblocking(False)
        with pytest.raises(BlockingIOError):
            for _ in range(100000):
                filler.send(b"STATUS=filling")
        notifier = Notifier({"NOTIFY_SOCKET": path})
        results: list = []
        sender = threading.Thread(target=lambda: results.append(notifier.ready("x")), daemon=True)
        sender.start()
        sender.join(30)  # a hang guard: the send gives up after a short wait
        assert not sender.is_alive(), "sd_notify blocked on a full socket"
        assert results == [False]


def test_reloading_carries_the_monotonic_time(listener):
    """systemd 253+ matches RELOADING=1 to its reload by MONOTONIC_USEC (Type=notify-reload needs it)."""
    import time

    path, sock = listener
    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    assert Notifier({"NOTIFY_SOCKET": path}).reloading()
    lines = sock.recv(4096).decode().split("\n")
    after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    assert lines[0] == "RELOADING=1"
    usec = int(next(line for line in lines if line.startswith("MONOTONIC_USEC="))[len("MONOTONIC_USEC="):])
    assert before <= usec <= after
