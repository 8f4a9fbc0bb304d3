"""The service and the tests' fake both meet the API layer's façade (daemon/api/facade.py).

A type checker proves it (mypy, on a small file that hands each to a function taking the
protocol); a quick look at the members and their parameters says the same without one.
"""
from __future__ import annotations

import inspect
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, List, get_type_hints

import pytest

from daemon_fixture import FakeMockControl, FakeService
from edgetpud.daemon.api.facade import FaultInjection, ServiceFacade
from edgetpud.daemon.service import Service

ROOT = Path(__file__).resolve().parent.parent
FOLDERS = ("daemon", "hal", "mock_device", "protos")

CHECK = '''
from daemon_fixture import FakeMockControl, FakeService
from edgetpud.daemon.api.facade import FaultInjection, ServiceFacade
from edgetpud.daemon.service import Service
from edgetpud.mock_device.control import MockControl


def serve(facade: ServiceFacade) -> None: ...


def control(faults: FaultInjection) -> None: ...


def check(service: Service, fake: FakeService, mock: MockControl, fake_mock: FakeMockControl) -> None:
    serve(service)
    serve(fake)
    control(mock)
    control(fake_mock)
'''


def mypy(tmp_path: Path, source: str) -> subprocess.CompletedProcess:
    """mypy on ``source``; the folders are mapped onto ``edgetpud`` the way setup.py maps them
    (the editable install's import hook is invisible to mypy)."""
    tree = tmp_path / "tree" / "edgetpud"
    tree.mkdir(parents=True)
    for folder in FOLDERS:
        (tree / folder).symlink_to(ROOT / folder, target_is_directory=True)
    check = tmp_path / "check.py"
    check.write_text(source)
    env = {**os.environ, "MYPYPATH": os.pathsep.join([str(tmp_path / "tree"), str(ROOT / "tests")])}
    # --ignore-missing-imports: protobuf's stubs (types-protobuf) may be absent; the façade's own types are not
    return subprocess.run([sys.executable, "-m", "mypy", "--follow-imports=silent", "--ignore-missing-imports",
                           "--no-error-summary",
                           "--cache-dir", str(tmp_path / "cache"), str(check)],
                          capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)


@pytest.mark.slow  # a type checker run: seconds
def test_mypy_accepts_the_service_and_the_fake_as_the_facade(tmp_path: Path) -> None:
    pytest.importorskip("mypy", reason="mypy is a dev dependency: scripts/setup-dev installs it")
    result = mypy(tmp_path, CHECK)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.slow  # a type checker run: seconds
def test_mypy_refuses_what_does_not_meet_the_facade(tmp_path: Path) -> None:
    """The check above could pass by mypy seeing nothing; here it must see a missing member."""
    pytest.importorskip("mypy", reason="mypy is a dev dependency: scripts/setup-dev installs it")
    result = mypy(tmp_path, CHECK + "\n\nclass NoInfer(FakeService):\n    infer = None\n\n\n"
                  "def refused(fake: NoInfer) -> None:\n    serve(fake)\n")
    assert result.returncode == 1 and '"NoInfer"' in result.stdout and "infer" in result.stdout, result.stdout


def members(protocol: type) -> List[str]:
    return sorted(name for name in vars(protocol) if not name.startswith("_"))


def parameters(value: Any) -> List[str]:
    return list(inspect.signature(value).parameters)


@pytest.mark.parametrize("implementation", [Service, FakeService], ids=["Service", "FakeService"])
def test_every_member_of_the_facade_is_there_with_the_same_parameters(implementation: type) -> None:
    attributes = get_type_hints(implementation)
    for name in members(ServiceFacade):
        wanted = vars(ServiceFacade)[name]
        if isinstance(wanted, property):  # a property or an attribute (set in __init__) reads as the protocol wants
            assert isinstance(getattr(implementation, name, None), property) or name in attributes, name
            continue
        method = getattr(implementation, name)
        assert parameters(method) == parameters(wanted), name
        assert inspect.iscoroutinefunction(method) == inspect.iscoroutinefunction(wanted), name


def test_the_fake_fault_injection_takes_what_the_mock_takes() -> None:
    from edgetpud.mock_device.control import MockControl

    for name in members(FaultInjection):
        wanted = parameters(vars(FaultInjection)[name])
        assert parameters(getattr(MockControl, name)) == wanted, name
        assert parameters(getattr(FakeMockControl, name)) == wanted, name
