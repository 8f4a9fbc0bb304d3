"""The real ``edgetpud`` process: READY=1 through a fake NOTIFY_SOCKET, SIGTERM under load, SIGHUP, one socket owner."""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from typing import List, Optional, Tuple

import pytest

from bundles import make_bundle
from daemon_fixture import NotifyListener, process_log

pytestmark = pytest.mark.slow  # starts worker processes or the daemon

SMALL = "mobilenet_v1_0.25_128_quant"
LARGE = "mobilenet_v1_0.5_160_quant"
START_TIMEOUT_S = 90.0


@pytest.fixture
def daemon_env(tmp_path, test_data):
    models = tmp_path / "models"
    models.mkdir()
    make_bundle(models, test_data, "small", SMALL)
    notify = NotifyListener(tmp_path / "notify.sock")
    procs: List[subprocess.Popen] = []

    def start(*extra: str, listen: Optional[str] = None, name: str = "daemon",
              env: Optional[dict] = None) -> subprocess.Popen:
        env = dict(os.environ, NOTIFY_SOCKET=str(notify.path), PYTHONUNBUFFERED="1", **(env or {}))
        env.pop("JOURNAL_STREAM", None)
        log_path = tmp_path / f"{name}.log"
        args = [sys.executable, "-m", "edgetpud.daemon.main", "--config", str(tmp_path / "edgetpud.toml"),
                "--device", "mock:1", "--models", str(models), "--state-dir", str(tmp_path / "state"),
                "--listen", listen or f"unix:{tmp_path / 'edgetpud.sock'}", *extra]
        with open(log_path, "w") as log_file:
            proc = subprocess.Popen(args, env=env, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True)
        proc.log_path = log_path  # type: ignore[attr-defined]
        procs.append(proc)
        return proc

    (tmp_path / "edgetpud.toml").write_text("grace_s = 20\nlog_level = \"info\"\n")
    yield start, notify, models, f"unix:{tmp_path / 'edgetpud.sock'}"
    for proc in procs:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
    notify.close()


Outcome = Tuple[str, Optional[str], float, float]  # code, top class or message, start, end


def classify_loop(address: str, image: bytes, stop: threading.Event, outcomes: List[Outcome]) -> None:
    """Classify until ``stop`` or UNAVAILABLE; every other failure, whatever its kind, is a bad outcome."""
    from edgetpud.daemon.client import Client, ClientError

    started = time.monotonic()
    try:
        with Client(address, timeout=30) as client:
            while not stop.is_set():
                started = time.monotonic()
                try:
                    result = client.classify("small", image)
                    outcomes.append(("ok", str(result.classes[0].id), started, time.monotonic()))
                except ClientError as exc:
                    outcomes.append((exc.code.name, exc.message, started, time.monotonic()))
                    if exc.code.name == "UNAVAILABLE":
                        return
    except BaseException as exc:  # noqa: BLE001 - not a status the daemon answered: the test reports it
        outcomes.append((f"raised {type(exc).__name__}", repr(exc), started, time.monotonic()))


@pytest.mark.parametrize("to_group", [False, True], ids=["to-main-process", "to-process-group"])
def test_ready_then_sigterm_under_load_loses_no_accepted_request(daemon_env, test_data, to_group):
    """systemd (KillMode=mixed) signals the main process; `timeout`, a terminal or a supervisor may signal the group."""
    pytest.importorskip("edgetpud.daemon.client")
    start, notify, _, address = daemon_env
    proc = start("--mock-latency-ms", "20")
    messages = notify.wait_for("READY=1", START_TIMEOUT_S, proc)
    assert any(m.startswith("STATUS=") or "\nSTATUS=" in m for m in messages)
    image = (test_data / "cat.bmp").read_bytes()
    stop = threading.Event()
    outcomes: List[Outcome] = []
    clients = [threading.Thread(target=classify_loop, args=(address, image, stop, outcomes)) for _ in range(4)]
    for t in clients:
        t.start()
    try:
        deadline = time.monotonic() + 30
        while sum(1 for o in outcomes if o[0] == "ok") < 20 and time.monotonic() < deadline:
            time.sleep(0.02)
        ok_before = sum(1 for o in outcomes if o[0] == "ok")
        term_at = time.monotonic()
        if to_group:  # the daemon leads its own session (start_new_session): its workers get it too
            os.killpg(proc.pid, signal.SIGTERM)
        else:
            proc.send_signal(signal.SIGTERM)
        notify.wait_for("STOPPING=1", 10, None)
        assert proc.wait(30) == 0, process_log(proc)
    finally:
        stop.set()
        for t in clients:
            t.join(30)
    assert not [t.name for t in clients if t.is_alive()]
    assert ok_before >= 20
    # An accepted request either succeeded or, after SIGTERM, was refused at the door (UNAVAILABLE):
    # nothing failed half-way (CANCELLED, INTERNAL, ABORTED...) and every answer was right.
    bad = [o for o in outcomes if o[0] not in ("ok", "UNAVAILABLE")]
    assert bad == [], bad
    assert {o[1] for o in outcomes if o[0] == "ok"} == {"283"}
    # requests in flight when SIGTERM arrived were drained to completion, not dropped
    assert any(o[0] == "ok" and o[2] < term_at < o[3] for o in outcomes), outcomes[-8:]
    log = process_log(proc)
    assert "draining" in log and "stopped" in log
    assert "died" not in log  # the worker was stopped by the daemon after the drain, not killed by the signal


def test_sighup_rescans_the_models_folder(daemon_env, test_data):
    pytest.importorskip("edgetpud.daemon.client")
    from edgetpud.daemon.client import Client

    start, notify, models, address = daemon_env
    proc = start(env={"WATCHDOG_USEC": "400000"})
    notify.wait_for("READY=1", START_TIMEOUT_S, proc)
    notify.messages.clear()
    notify.wait_for("WATCHDOG=1", 5, proc)  # pinged from the main loop every 0.2 s, also once serving
    notify.messages.clear()
    make_bundle(models, test_data, "large", LARGE)
    shutil.rmtree(models / "small")
    proc.send_signal(signal.SIGHUP)
    notify.wait_for("RELOADING=1", 30, proc)
    notify.wait_for("READY=1", 60, proc)
    with Client(address, timeout=30) as client:
        names = {m.name for m in client.models()}
        assert names == {"large"}
        top = client.classify("large", (test_data / "cat.bmp").read_bytes()).classes[0]
        assert top.id == 286
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 0


def shm_names() -> set:
    return set(os.listdir("/dev/shm"))


@pytest.mark.skipif(not os.path.isdir("/dev/shm"), reason="POSIX shared memory is not under /dev/shm here")
def test_killing_every_process_at_once_leaves_nothing_in_dev_shm(daemon_env, test_data):
    """What ``systemctl kill -s KILL`` or a cgroup OOM kill does: no process is left to clean up."""
    from edgetpud.daemon.client import Client

    before = shm_names()
    start, notify, _, address = daemon_env
    proc = start()
    notify.wait_for("READY=1", START_TIMEOUT_S, proc)
    with Client(address, timeout=30) as client:  # the model's slots are mapped and in use
        assert client.classify("small", (test_data / "cat.bmp").read_bytes()).classes[0].label == "tiger cat"
    assert shm_names() - before == set()  # unlinked as soon as the worker had mapped them
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(10)
    assert shm_names() - before == set()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_second_daemon_on_the_same_socket_or_port_fails_loudly(daemon_env, tmp_path):
    start, notify, _, address = daemon_env
    port = free_port()
    first = start("--listen", f"127.0.0.1:{port}")
    notify.wait_for("READY=1", START_TIMEOUT_S, first)
    same_socket = start(name="second")
    assert same_socket.wait(START_TIMEOUT_S) == 1
    assert "another" in process_log(same_socket)
    same_port = start("--listen", f"127.0.0.1:{port}", listen=f"unix:{tmp_path / 'other.sock'}", name="third")
    assert same_port.wait(START_TIMEOUT_S) == 1
    assert f"127.0.0.1:{port}" in process_log(same_port) and "in use" in process_log(same_port)
    assert first.poll() is None  # the first one still serves
    first.send_signal(signal.SIGTERM)
    assert first.wait(30) == 0


def test_bad_configuration_exits_with_the_key_named(tmp_path):
    config = tmp_path / "edgetpud.toml"
    config.write_text("queue_dept = 3\n")
    result = subprocess.run([sys.executable, "-m", "edgetpud.daemon.main", "--config", str(config)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "queue_dept" in result.stderr
    missing = subprocess.run([sys.executable, "-m", "edgetpud.daemon.main", "--config", str(tmp_path / "no.toml")],
                             capture_output=True, text=True, timeout=60)
    assert missing.returncode == 2 and "does not exist" in missing.stderr
