"""Shared fixtures: the real Coral test data, and a guard against leaked processes and threads."""
from __future__ import annotations

import multiprocessing
import os
import shutil
import tempfile
import threading
from pathlib import Path

import pytest

TEST_DATA_ENV = "EDGETPUD_TEST_DATA"

# Tests start daemons and CLIs from a process that runs gRPC; they fork only to
# exec, and gRPC's fork handlers would otherwise run in the child on Python 3.9.
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")


@pytest.fixture(scope="session")
def test_data() -> Path:
    """The folder of real Coral models; tests that need it skip, with the reason, where it is unset."""
    value = os.environ.get(TEST_DATA_ENV)
    if not value:
        pytest.skip(f"{TEST_DATA_ENV} is not set: real-model tests need ../shared/coral-test-data")
    return resolve_test_data(value)


@pytest.fixture(scope="session")
def traffic_data(test_data: Path) -> Path:
    """The AutoML Video traffic model and frames, beside the Coral test data (../shared/traffic in CI)."""
    folder = test_data.parent / "traffic"
    if not folder.is_dir():
        pytest.skip(f"{folder} is absent: the traffic detector tests need ../shared/traffic beside the test data")
    return folder


def resolve_test_data(value: str) -> Path:
    """The folder $EDGETPUD_TEST_DATA names, made absolute: tests hand it to other processes and URLs."""
    path = Path(value).resolve()
    if not path.is_dir():
        pytest.fail(f"{TEST_DATA_ENV}={value} is not a folder")
    return path


#: The suite's own temporary folder, so that what other runs on the machine leave in /tmp is not
#: counted as this run's leak; daemons and workers started by the tests inherit it through $TMPDIR.
SUITE_TMP = Path(tempfile.mkdtemp(prefix="edgetpud-tests-"))
os.environ["TMPDIR"] = str(SUITE_TMP)
tempfile.tempdir = str(SUITE_TMP)


@pytest.fixture(autouse=True, scope="module")
def no_leaked_mock_state():
    """Fail a module that leaves an edgetpud-mock-* folder behind in the temporary folder (a pool never stopped)."""
    before = set(SUITE_TMP.glob("edgetpud-mock-*"))
    yield
    leaked = set(SUITE_TMP.glob("edgetpud-mock-*")) - before
    for folder in leaked:
        shutil.rmtree(folder, ignore_errors=True)
    assert not leaked, f"the module left mock state folders behind: {sorted(map(str, leaked))}"


@pytest.fixture(autouse=True)
def no_leaked_children():
    """Fail a test that leaves a child process or a non-daemon thread running."""
    threads_before = set(threading.enumerate())
    yield
    children = [p for p in multiprocessing.active_children() if p.is_alive()]
    for p in children:
        p.kill()
    leaked_threads = [
        t for t in threading.enumerate()
        if t not in threads_before and t.is_alive() and not t.daemon
    ]
    assert not children, f"test leaked child processes: {children}"
    assert not leaked_threads, f"test leaked threads: {leaked_threads}"


@pytest.fixture
def client(daemon):
    """A client of the module's real ``daemon`` (see ``daemon_fixture.real_daemon_fixture``).

    Imported here, not at the top, so tests that never talk gRPC do not load it.
    """
    from edgetpud.daemon.client import Client

    with Client(daemon.address, timeout=60) as c:
        yield c


def pytest_sessionfinish(session, exitstatus) -> None:  # type: ignore[no-untyped-def]
    """Drop the suite's temporary folder (pytest's own tmp_path folders live elsewhere)."""
    shutil.rmtree(SUITE_TMP, ignore_errors=True)


@pytest.fixture(scope="session")
def traffic_data(test_data: Path) -> Path:
    """The traffic video detector and its frames (../shared/traffic beside the Coral test data)."""
    path = test_data.parent / "traffic"
    if not (path / "traffic_model.tflite").is_file():
        pytest.skip(f"no traffic data at {path}: the traffic detector tests need ../shared/traffic")
    return path
