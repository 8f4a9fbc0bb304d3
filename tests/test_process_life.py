"""The real ``edgetpud`` process as an operator and systemd meet it: bad configuration at start
and on SIGHUP, signals during start-up, the listeners' files, and what it writes to stderr."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Dict, List, Optional

import pytest

from bundles import make_bundle
from daemon_fixture import NotifyListener, process_log

pytestmark = pytest.mark.slow  # starts worker processes or the daemon

SMALL = "mobilenet_v1_0.25_128_quant"
START_TIMEOUT_S = 90.0
#: A daemon that cannot start must exit by itself well within this (a guard against hangs, not a timing check).
EXIT_TIMEOUT_S = 60.0


class Env:
    """A work folder, a models folder with one bundle, a config file and a fake notify socket."""

    def __init__(self, tmp_path: Path, test_data: Path) -> None:
        self.tmp = tmp_path
        self.test_data = test_data
        self.models = tmp_path / "models"
        self.models.mkdir()
        make_bundle(self.models, test_data, "small")
        self.socket = tmp_path / "edgetpud.sock"
        self.address = f"unix:{self.socket}"
        self.config = tmp_path / "edgetpud.toml"
        self.write_config()
        self.notify = NotifyListener(tmp_path / "notify.sock")
        self.procs: List[subprocess.Popen] = []

    def write_config(self, extra: str = "") -> None:
        self.config.write_text(
            'devices = ["mock:1"]\n'
            f'models_dir = "{self.models}"\n'
            f'state_dir = "{self.tmp / "state"}"\n'
            f'listen = ["{self.address}"]\n'
            "grace_s = 5.0\n" + extra)

    def start(self, *args: str, name: str = "daemon", env: Optional[Dict[str, str]] = None,
              stderr_to: Optional[Path] = None) -> subprocess.Popen:
        environ = dict(os.environ, NOTIFY_SOCKET=str(self.notify.path), PYTHONUNBUFFERED="1")
        environ.pop("JOURNAL_STREAM", None)
        environ.update(env or {})
        log_path = stderr_to or self.tmp / f"{name}.log"
        with open(log_path, "w") as log_file:
            proc = subprocess.Popen([sys.executable, "-m", "edgetpud.daemon.main", "--config", str(self.config),
                                     *args], env=environ, stdout=log_file, stderr=subprocess.STDOUT,
                                    start_new_session=True)
        proc.log_path = log_path  # type: ignore[attr-defined]
        self.procs.append(proc)
        return proc

    def close(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)
        self.notify.close()


@pytest.fixture
def env(tmp_path, test_data):
    e = Env(tmp_path, test_data)
    yield e
    e.close()


def wait_exit(proc: subprocess.Popen) -> int:
    try:
        return proc.wait(EXIT_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        pytest.fail(f"edgetpud did not exit by itself: {process_log(proc)[-3000:]}")


def client_models(address: str) -> set:
    from edgetpud.daemon.client import Client

    with Client(address, timeout=30) as client:
        return {m.name for m in client.models()}


# ----------------------------------------------------------------- start-up failures


@pytest.mark.parametrize("extra,names", [
    ("max_message_bytes = 1000000000000\n", ["max_message_bytes", "1000000000000"]),
    ("max_concurrent_requests = 1000000000000\n", ["max_concurrent_requests"]),
    ('metrics_listen = "127.0.0.1:99999"\n', ["metrics_listen", "99999"]),
    ("grace_s = nan\n", ["grace_s", "nan"]),
], ids=["huge-message-size", "huge-concurrency", "metrics-port-out-of-range", "nan-grace"])
def test_an_unusable_value_stops_the_start_with_one_line_naming_it(env, extra, names):
    """These passed validation and then crashed the start with a traceback and left the process hanging."""
    config = env.config.read_text().replace("grace_s = 5.0\n", "") + extra
    env.config.write_text(config)
    proc = env.start()
    assert wait_exit(proc) == 2
    text = process_log(proc)
    assert "Traceback" not in text
    assert len(text.strip().splitlines()) == 1, text
    for name in names:
        assert name in text
    assert str(env.config) in text
def test_an_unexpected_failure_at_start_exits_with_one_line(env):
    """A socket group name no system could have (a NUL in it) fails where nothing expected it."""
    env.write_config('socket_group = "edge\\u0000tpu"\n')
    proc = env.start()
    code = wait_exit(proc)
    text = process_log(proc)
    assert code in (1, 2), text
    assert "Traceback" not in text
    assert "socket_group" in text or "null" in text
    assert "READY=1" not in "\n".join(env.notify.drain())


# ----------------------------------------------------------------- SIGHUP


def test_a_models_folder_that_disappears_keeps_its_models_served_on_sighup(env):
    """An unmounted card or a moved folder must not unload every model: the reload is refused instead."""
    proc = env.start()
    env.notify.wait_for("READY=1", START_TIMEOUT_S, proc)
    env.notify.messages.clear()
    moved = env.tmp / "models.moved"
    env.models.rename(moved)
    proc.send_signal(signal.SIGHUP)
    env.notify.wait_for("READY=1", 60, proc)
    assert client_models(env.address) == {"small"}
    lines = [line for line in process_log(proc).splitlines() if "reload failed" in line]
    assert len(lines) == 1 and str(env.models) in lines[0], process_log(proc)
    # once the folder is back, a reload rescans it as usual
    moved.rename(env.models)
    make_bundle(env.models, env.test_data, "second")
    env.notify.messages.clear()
    proc.send_signal(signal.SIGHUP)
    env.notify.wait_for("READY=1", 60, proc)
    assert client_models(env.address) == {"small", "second"}
    proc.send_signal(signal.SIGTERM)
    assert wait_exit(proc) == 0


def test_an_invalid_config_on_sighup_keeps_the_old_one_through_a_sighup_storm(env):
    """Requests run while the operator breaks the file and sends SIGHUP again and again."""
    from edgetpud.daemon.client import Client, ClientError

    proc = env.start()
    env.notify.wait_for("READY=1", START_TIMEOUT_S, proc)
    image = (env.test_data / "cat.bmp").read_bytes()
    stop = threading.Event()
    outcomes: List[str] = []

    def classify() -> None:
        with Client(env.address, timeout=30) as client:
            while not stop.is_set():
                try:
                    outcomes.append(str(client.classify("small", image).classes[0].id))
                except ClientError as exc:
                    outcomes.append(exc.code.name)

    def read_notify() -> None:  # systemd reads its notify socket all the time
        env.notify.sock.settimeout(0.1)
        while not stop.is_set():
            try:
                env.notify.messages.append(env.notify.sock.recv(65536).decode())
            except socket.timeout:
                pass

    threads = [threading.Thread(target=classify) for _ in range(2)] + [threading.Thread(target=read_notify)]
    for t in threads:
        t.start()
    try:
        env.config.write_text(env.config.read_text() + 'queue_depth = "sixteen"\n')
        for _ in range(30):
            proc.send_signal(signal.SIGHUP)
            time.sleep(0.01)
        env.write_config("[edgetpd]\ngrace_s = 1\n")  # a typo'd table
        for _ in range(30):
            proc.send_signal(signal.SIGHUP)
            time.sleep(0.01)
        deadline = time.monotonic() + 30
        while "edgetpd" not in process_log(proc) and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        stop.set()
        for t in threads:
            t.join(30)
    assert proc.poll() is None, process_log(proc)
    assert outcomes and set(outcomes) == {"283"}, set(outcomes)
    failures = [line for line in process_log(proc).splitlines() if "reload failed" in line]
    assert failures and all("keeping the running configuration" in line for line in failures)
    assert any("'queue_depth'" in line and "sixteen" in line for line in failures)
    assert any("'edgetpd'" in line for line in failures)
    assert client_models(env.address) == {"small"}
    proc.send_signal(signal.SIGTERM)
    assert wait_exit(proc) == 0


# ----------------------------------------------------------------- signals


def test_sigterm_during_start_up_stops_without_ever_reporting_ready(env):
    """Loading models can take minutes: systemd's stop (or Ctrl-C) must not wait for all of them."""
    for name in ("second", "third"):
        make_bundle(env.models, env.test_data, name)
    proc = env.start("--mock-latency-ms", "4000")  # each model's warm-up invocation takes 4 s
    deadline = time.monotonic() + START_TIMEOUT_S
    while "devices up" not in process_log(proc) and time.monotonic() < deadline:
        assert proc.poll() is None, process_log(proc)
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    assert wait_exit(proc) == 0, process_log(proc)
    messages = "\n".join(env.notify.drain()).split("\n")
    assert "READY=1" not in messages
    assert "STOPPING=1" in messages
    text = process_log(proc)
    assert "ready:" not in text and "Traceback" not in text
    assert "serving on mock:0" not in text.split("stop requested")[-1]  # no model loaded after the signal
    assert not env.socket.exists()


# ----------------------------------------------------------------- logging


def test_syslog_priorities_only_when_stderr_is_the_journal(env):
    """JOURNAL_STREAM is inherited by whatever a service starts; only its own stream is the journal."""
    inherited = env.start("--log-level", "info", env={"JOURNAL_STREAM": "1:2"}, name="inherited")
    env.notify.wait_for("READY=1", START_TIMEOUT_S, inherited)
    inherited.send_signal(signal.SIGTERM)
    assert wait_exit(inherited) == 0
    lines = [line for line in process_log(inherited).splitlines() if "edgetpud." in line]
    assert lines and not any(line.startswith("<") for line in lines), lines[:3]

    journal = env.tmp / "journal.log"
    journal.write_text("")
    st = os.stat(journal)
    env.notify.messages.clear()
    direct = env.start(env={"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"}, stderr_to=journal)
    env.notify.wait_for("READY=1", START_TIMEOUT_S, direct)
    direct.send_signal(signal.SIGTERM)
    assert wait_exit(direct) == 0
    lines = [line for line in process_log(direct).splitlines() if "edgetpud." in line]
    assert lines and all(line[:3] in ("<6>", "<4>", "<3>", "<7>") for line in lines), lines[:3]


# ----------------------------------------------------------------- systemd unit and installer

ROOT = Path(__file__).resolve().parents[1]


def unit_values(key: str) -> List[str]:
    """Every value of ``key`` in systemd/edgetpud.service (a key may repeat)."""
    values = []
    for line in (ROOT / "systemd" / "edgetpud.service").read_text().splitlines():
        name, sep, value = line.partition("=")
        if sep and name.strip() == key:
            values.extend(value.split())
    return values


def test_the_unit_does_not_restart_in_a_loop_on_a_bad_configuration(tmp_path):
    """Restart=on-failure would retry a broken file every RestartSec until the start limit hides why."""
    config = tmp_path / "edgetpud.toml"
    config.write_text("queue_depth = -1\n")
    result = subprocess.run([sys.executable, "-m", "edgetpud.daemon.main", "--config", str(config)],
                            capture_output=True, text=True, timeout=EXIT_TIMEOUT_S)
    assert result.returncode != 0 and "queue_depth" in result.stderr
    assert unit_values("Restart") == ["on-failure"]
    assert str(result.returncode) in unit_values("RestartPreventExitStatus")


def installer(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(ROOT / "scripts" / "install-on-device"), *args], capture_output=True,
                          text=True, timeout=60, env={**os.environ, "PYTHON": sys.executable})


def test_the_installer_dry_run_takes_a_wheel(tmp_path):
    wheel = tmp_path / "edgetpud-0.1.0-py3-none-any.whl"
    wheel.write_bytes(b"PK")
    result = installer("--source", str(wheel), "--prefix", str(tmp_path / "opt"))
    assert result.returncode == 0, result.stderr
    assert f"pip install --upgrade {wheel}" in result.stdout
    assert f"{ROOT}/systemd/edgetpud.service /etc/systemd/system/edgetpud.service" in result.stdout
    assert not (tmp_path / "opt").exists()  # a dry run changes nothing


@pytest.mark.parametrize("option", ["--prefix", "--source"])
def test_the_installer_names_an_option_without_its_value(option):
    result = installer(option)
    assert result.returncode == 2
    assert option in result.stderr and "unbound" not in result.stderr


# ----------------------------------------------------------------- a second daemon


def test_a_second_daemon_fails_before_touching_the_devices(env):
    """The devices (and minutes of model loading) belong to the first daemon: the second must not start them."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        metrics_port = probe.getsockname()[1]
    first = env.start("--listen", env.address, "--listen", f"127.0.0.1:{port}",
                      "--metrics-listen", f"127.0.0.1:{metrics_port}")
    env.notify.wait_for("READY=1", START_TIMEOUT_S, first)
    other = f"unix:{env.tmp / 'other.sock'}"
    cases = {"socket": ["--listen", env.address], "port": ["--listen", other, "--listen", f"127.0.0.1:{port}"],
             "metrics": ["--listen", other, "--metrics-listen", f"127.0.0.1:{metrics_port}"]}
    for name, args in cases.items():
        second = env.start(*args, name=name)
        assert wait_exit(second) == 1, process_log(second)
        text = process_log(second)
        assert "devices up" not in text and "MOCK" not in text, text
        assert len([line for line in text.splitlines() if "CRITICAL" in line]) == 1, text
    assert "another" in process_log(env.procs[1])
    assert f"127.0.0.1:{port}" in process_log(env.procs[2]) and "in use" in process_log(env.procs[2])
    assert f"127.0.0.1:{metrics_port}" in process_log(env.procs[3]) and "in use" in process_log(env.procs[3])
    assert first.poll() is None and client_models(env.address) == {"small"}
    first.send_signal(signal.SIGTERM)
    assert wait_exit(first) == 0
