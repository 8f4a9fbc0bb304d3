"""The files in systemd/ as systemd and udev read them: any warning fails.

``systemd-analyze verify`` exits 0 on an unknown key and udev ignores a bad line with
a log message, so both checks read the output rather than trust the exit code. Each
check is shown to catch a planted mistake, so a check that sees nothing cannot pass.
"""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import List

import pytest

SYSTEMD = Path(__file__).resolve().parents[1] / "systemd"
INSTALLED_EXEC = "/opt/edgetpud/venv/bin/edgetpud"
RULES_NAME = "99-edgetpu.rules"


def verify_unit(text: str, folder: Path) -> str:
    """What ``systemd-analyze verify`` says of a unit (empty when all is well).

    ExecStart names the installed venv, missing here, so it points at a stand-in executable.
    """
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is missing (Debian: apt-get install systemd)")
    stand_in = folder / "edgetpud"
    stand_in.write_text("#!/bin/sh\n")
    stand_in.chmod(0o755)
    unit = folder / "edgetpud.service"
    unit.write_text(text.replace(INSTALLED_EXEC, str(stand_in)))
    done = subprocess.run(["systemd-analyze", "verify", "--man=no", str(unit)],
                          capture_output=True, text=True, timeout=60)
    return (done.stdout + done.stderr).strip() or ("" if done.returncode == 0 else f"exit {done.returncode}")


def udev_complaints(text: str, folder: Path) -> List[str]:
    """What udev says of the rules file's lines, loaded by ``udevadm test`` as if installed.

    In a private mount namespace the file is laid over /etc/udev/rules.d, and group edgetpu
    (made by sysusers on a device) is added to a copy of /etc/group, so nothing on the host changes.
    """
    if shutil.which("udevadm") is None or shutil.which("unshare") is None:
        pytest.skip("udevadm or unshare is missing (Debian: apt-get install udev util-linux)")
    if os.geteuid() != 0:
        pytest.skip("udevadm test in a private mount namespace needs root")
    rules = folder / "rules.d"
    rules.mkdir()
    (rules / RULES_NAME).write_text(text)
    group = folder / "group"
    group.write_text(Path("/etc/group").read_text() + "edgetpu:x:64999:\n")
    script = (f"mount --bind {rules} /etc/udev/rules.d && mount --bind {group} /etc/group && "
              "udevadm test --action=add /devices/virtual/mem/null")
    done = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", script],
                          capture_output=True, text=True, timeout=60)
    output = done.stdout + done.stderr
    assert f"Reading rules file: /etc/udev/rules.d/{RULES_NAME}" in output, output[-2000:]
    return [line for line in output.splitlines() if f"{RULES_NAME}:" in line]


def test_the_unit_verifies_without_a_word(tmp_path: Path):
    assert verify_unit((SYSTEMD / "edgetpud.service").read_text(), tmp_path) == ""


def test_verify_would_catch_an_unknown_key(tmp_path: Path):
    text = (SYSTEMD / "edgetpud.service").read_text().replace("[Service]\n", "[Service]\nWatchdogSecs=30s\n")
    assert "Unknown key 'WatchdogSecs'" in verify_unit(text, tmp_path)


def test_the_udev_rules_load_without_a_word(tmp_path: Path):
    assert udev_complaints((SYSTEMD / RULES_NAME).read_text(), tmp_path) == []


def test_udev_check_would_catch_a_bad_key(tmp_path: Path):
    text = (SYSTEMD / RULES_NAME).read_text() + 'SUBSYSTEM=="usb", GRUP="edgetpu"\n'
    complaints = udev_complaints(text, tmp_path)
    assert len(complaints) == 1 and "Invalid key 'GRUP'" in complaints[0], complaints
