"""A device that hangs, through the real daemon and the mock's ``hang`` fault: the caller is told why by
the daemon, before its own deadline, instead of gRPC's bare "DEADLINE_EXCEEDED: Stream removed".

``invoke_timeout_s`` is short here so the hang watchdog fires in about a second.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Iterator

import grpc
import pytest

from edgetpud.daemon.client import Client, ClientError

from daemon_fixture import RealDaemon, ctl, wait_for

pytestmark = pytest.mark.slow  # starts the daemon

MODEL = "mobilenet_v1_0.25_128_quant"
INVOKE_TIMEOUT_S = 1.5


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: Any, test_data: Path) -> Iterator[RealDaemon]:
    d = RealDaemon(tmp_path_factory.mktemp("hung_device"), test_data, bundles=[MODEL],
                   config_lines=[f"invoke_timeout_s = {INVOKE_TIMEOUT_S}", "device_poll_s = 0.2"]).start()
    yield d
    d.stop()


@pytest.fixture
def client(daemon: RealDaemon) -> Iterator[Client]:
    with Client(daemon.address, timeout=30) as c:
        restarts = c.devices()[0].restarts
        yield c
        # every test hangs the device once: the next one starts after the watchdog restarted its worker
        wait_for(lambda: restarted(c, restarts), timeout=30, what="the restarted worker")


def restarted(client: Client, restarts_before: int) -> bool:
    device = client.devices()[0]
    return device.restarts > restarts_before and device.state == "ready"


def classify_failure(client: Client, cat: Path, timeout: float) -> ClientError:
    client.mock.inject_fault("mock:0", "hang", seconds=60)
    with pytest.raises(ClientError) as caught:
        client.classify(MODEL, cat, timeout=timeout)
    return caught.value


def test_a_deadline_as_long_as_the_watchdog_gets_the_daemons_reason(client: Client, test_data: Path) -> None:
    # edgetpuctl's default --timeout equals invoke_timeout_s's default: the caller's deadline won the race
    # and gRPC could only say "Stream removed".
    started = time.monotonic()
    error = classify_failure(client, test_data / "cat.bmp", timeout=INVOKE_TIMEOUT_S)
    assert time.monotonic() - started < INVOKE_TIMEOUT_S
    assert error.code == grpc.StatusCode.DEADLINE_EXCEEDED, error
    assert "Stream removed" not in error.message
    assert error.message.startswith("device mock:0 did not answer within"), error.message
    assert f"invoke_timeout_s ({INVOKE_TIMEOUT_S:g} s)" in error.message and "longer deadline" in error.message


def test_a_longer_deadline_is_told_the_worker_is_restarted(client: Client, test_data: Path) -> None:
    restarts = client.devices()[0].restarts
    error = classify_failure(client, test_data / "cat.bmp", timeout=20)
    assert error.code == grpc.StatusCode.UNAVAILABLE, error
    assert error.message.startswith(f"device mock:0 did not answer within {INVOKE_TIMEOUT_S:g} s (invoke_timeout_s); "
                                    "its worker is being restarted: retry in a moment"), error.message
    wait_for(lambda: restarted(client, restarts), timeout=30, what="the restarted worker")
    assert client.classify(MODEL, test_data / "cat.bmp").classes  # and it serves again


def test_edgetpuctl_says_it_in_one_line(client: Client, daemon: RealDaemon, test_data: Path) -> None:
    client.mock.inject_fault("mock:0", "hang", seconds=60)
    done = ctl("--timeout", str(INVOKE_TIMEOUT_S), "classify", "-m", MODEL, str(test_data / "cat.bmp"),
               address=daemon.address)
    assert done.returncode == 1
    assert "DEADLINE_EXCEEDED: device mock:0 did not answer within" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr
