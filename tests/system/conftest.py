"""Fixtures of the system tests: one container per module, with edgetpud installed as an operator would.

They run only when asked (``scripts/test -m system tests/system``, as .ci/run does): a
boot takes root and about a minute the first time. Everywhere else they skip, saying why.
"""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Dict, Iterator, List

import pytest

from .container import CACHE, Container, cached_root, why_not_bootable

CHECKOUT = Path(__file__).resolve().parents[2]
SOURCE_INSIDE = "/srv/edgetpud-src"
WHEELHOUSE_INSIDE = "/srv/wheelhouse"
MODEL = "mobilenet_v1_0.25_128_quant"
#: Figures measured under the real systemd, printed at the end of the run.
MEASURED: Dict[str, float] = {}


def pytest_collection_modifyitems(config: pytest.Config, items: List[pytest.Item]) -> None:
    """Skip the system tests, with the way to run them, unless ``-m`` names them."""
    if "system" in (config.getoption("markexpr") or ""):
        return
    skip = pytest.mark.skip(reason="system tests boot a container under a real systemd: "
                                   "run them with scripts/test -m system tests/system (.ci/run does)")
    for item in items:
        if item.get_closest_marker("system"):
            item.add_marker(skip)


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:  # type: ignore[no-untyped-def]
    """Print what was measured, so a CI log shows the watchdog's restart time."""
    if MEASURED:
        figures = ", ".join(f"{name} {value:.2f} s" for name, value in MEASURED.items())
        terminalreporter.write_line(f"measured under the real systemd: {figures}")


def wheelhouse() -> Path:
    """edgetpud's wheel and its dependencies for this Python, made on the host (the container is offline)."""
    folder = CACHE / f"wheelhouse-cp{sys.version_info.major}{sys.version_info.minor}"
    folder.mkdir(parents=True, exist_ok=True)
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--find-links", str(folder),
                           str(CHECKOUT), "-w", str(folder)], capture_output=True, text=True, timeout=900)
    if done.returncode != 0:
        raise RuntimeError(f"pip wheel failed (exit {done.returncode}):\n{done.stdout}{done.stderr}")
    return folder


class Machine:
    """The booted container with edgetpud installed, and what the first install printed."""

    def __init__(self, container: Container, install_output: str) -> None:
        self.container = container
        self.install_output = install_output
        self.run = container.run
        self.path = container.path

    def install(self, *options: str) -> subprocess.CompletedProcess:
        """scripts/install-on-device from the checkout, offline from the host's wheelhouse."""
        return self.run(f"{SOURCE_INSIDE}/scripts/install-on-device", "--yes",
                        "--wheelhouse", WHEELHOUSE_INSIDE, *options, timeout=300)

    def show(self, *properties: str) -> Dict[str, str]:
        """``systemctl show`` of edgetpud.service as a dict."""
        out = self.run("systemctl", "show", "edgetpud.service", *(f"--property={p}" for p in properties)).stdout
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    def ctl(self, *args: str, user: str = "alice", check: bool = True) -> subprocess.CompletedProcess:
        """edgetpuctl inside, as ``user`` (alice is in group edgetpu, mallory is not)."""
        return self.run("/opt/edgetpud/venv/bin/edgetpuctl", *args, user=user, check=check, timeout=120)


@pytest.fixture(scope="module")
def machine(test_data: Path) -> Iterator[Machine]:
    """A fresh boot of the cached Debian root, edgetpud installed by install-on-device, one model served."""
    reason = why_not_bootable()
    if reason:
        pytest.skip(reason)
    root = cached_root()
    version = f"python3.{sys.version_info.minor}"
    if sys.version_info.major != 3 or not (root / "usr/lib" / version).is_dir():
        pytest.skip(f"the container has no {version}: the host's wheelhouse would not fit its Python")
    container = Container(root, {CHECKOUT: SOURCE_INSIDE, wheelhouse(): WHEELHOUSE_INSIDE})
    try:
        container.boot()
        first = Machine(container, "")
        done = first.install()
        machine = Machine(container, done.stdout + done.stderr)
        machine.run("useradd", "--create-home", "--groups", "edgetpu", "alice")
        machine.run("useradd", "--create-home", "mallory")
        bundle = machine.path(f"/var/lib/edgetpud/models/{MODEL}")
        bundle.mkdir(parents=True)
        shutil.copyfile(test_data / f"{MODEL}.tflite", bundle / "model.tflite")
        shutil.copyfile(test_data / "imagenet_labels.txt", bundle / "labels.txt")
        shutil.copyfile(test_data / "cat.bmp", machine.path("/var/local/cat.bmp"))
        machine.run("systemctl", "restart", "edgetpud.service")
        yield machine
    finally:
        container.shutdown()
