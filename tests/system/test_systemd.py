"""edgetpud under a real systemd 252: what the unit file promises, shown in fact.

One container for the module; the tests run in file order and each leaves the
service running for the next, except the last, which uninstalls.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from pathlib import Path
from typing import Dict, Tuple

import pytest

from .conftest import MEASURED, MODEL, Machine
from .container import CLEAN_ENV

pytestmark = [pytest.mark.system, pytest.mark.timeout(300)]

WATCHDOG_S, RESTART_S, TIMEOUT_STOP_S = 30.0, 2.0, 30.0
CLASSIFY = ("--json", "classify", "--model", MODEL, "/var/local/cat.bmp")


def wait_until(predicate, timeout: float, what: str) -> float:  # type: ignore[no-untyped-def]
    """Poll ``predicate`` every 0.1 s; the seconds it took, or a failure naming ``what``."""
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.1)
    return time.monotonic() - start


def journal_cursor(machine: Machine) -> str:
    """Where the journal ends now, so a test reads only its own lines."""
    out = machine.run("journalctl", "--show-cursor", "-n", "0", "-q").stdout
    return out.strip().split("cursor: ", 1)[-1]


def journal_since(machine: Machine, cursor: str) -> str:
    """The service's journal lines after ``cursor``, messages only."""
    return machine.run("journalctl", "-u", "edgetpud.service", f"--after-cursor={cursor}", "-o", "cat",
                       "--no-pager").stdout


def classify_ok(machine: Machine) -> Dict:
    """One classify of the cat as a member of group edgetpu, which must work."""
    return json.loads(machine.ctl(*CLASSIFY).stdout)


def test_install_warns_where_udev_does_not_run_and_goes_on(machine: Machine):
    assert "warning: udevd is not running here" in machine.install_output
    assert "edgetpud installed" in machine.install_output


def test_active_only_after_ready(machine: Machine):
    cursor = journal_cursor(machine)
    machine.run("systemctl", "restart", "edgetpud.service")
    # Type=notify: restart returns once active, and active must already mean serving.
    assert machine.ctl("status", check=False).returncode == 0
    props = machine.show("ActiveEnterTimestampMonotonic", "ExecMainStartTimestampMonotonic", "StatusText")
    ready_s = (int(props["ActiveEnterTimestampMonotonic"]) - int(props["ExecMainStartTimestampMonotonic"])) / 1e6
    MEASURED["READY after start"] = ready_s
    assert ready_s > 0.0
    assert "serving 1 model(s)" in props["StatusText"]
    assert "ready: unix:/run/edgetpud/edgetpud.sock" in journal_since(machine, cursor)


def test_group_member_classifies_through_the_socket(machine: Machine):
    result = classify_ok(machine)["results"][0]
    assert result["classes"][0]["label"] == "tiger cat"
    listing = machine.run("stat", "-c", "%a %U %G", "/run/edgetpud/edgetpud.sock").stdout.split()
    assert listing == ["660", "edgetpud", "edgetpu"]


def test_user_outside_the_group_is_refused(machine: Machine):
    done = machine.ctl(*CLASSIFY, user="mallory", check=False)
    assert done.returncode != 0
    assert "ermission denied" in done.stderr, done.stderr


def test_wedged_main_loop_is_restarted_by_the_watchdog(machine: Machine):
    before = machine.show("MainPID", "NRestarts")
    cursor = journal_cursor(machine)
    machine.run("kill", "-STOP", before["MainPID"])
    stopped = time.monotonic()

    def serving_again() -> bool:
        now = machine.show("MainPID", "ActiveState")
        return now["ActiveState"] == "active" and now["MainPID"] not in ("0", before["MainPID"])

    wait_until(serving_again, WATCHDOG_S + RESTART_S + 30, "a new main process after the watchdog fired")
    MEASURED["watchdog restart after SIGSTOP"] = took = time.monotonic() - stopped
    assert took <= WATCHDOG_S + RESTART_S + 10
    assert int(machine.show("NRestarts")["NRestarts"]) == int(before["NRestarts"]) + 1
    assert "Watchdog timeout" in machine.run("journalctl", "-u", "edgetpud.service", f"--after-cursor={cursor}",
                                             "--no-pager").stdout
    assert classify_ok(machine)["results"][0]["classes"][0]["label"] == "tiger cat"


LOAD_LOOP = """
import json, sys, time
from edgetpud.client import Client
image = open("/var/local/cat.bmp", "rb").read()
ok, failed = 0, []
end = time.monotonic() + float(sys.argv[1])
with Client("unix:/run/edgetpud/edgetpud.sock", timeout=20) as client:
    while time.monotonic() < end:
        try:
            client.classify("%s", image)
            ok += 1
        except Exception as exc:
            failed.append(repr(exc))
print(json.dumps({"ok": ok, "failed": failed}))
""" % MODEL


def test_reload_picks_up_a_new_bundle_without_a_failed_request(machine: Machine, test_data: Path):
    machine.path("/var/local/load_loop.py").write_text(LOAD_LOOP)
    loop = subprocess.Popen(["nsenter", "-t", str(machine.container.init_pid), "-a", *CLEAN_ENV,
                             "setpriv", "--reuid=alice", "--regid=alice", "--init-groups", "--",
                             "/opt/edgetpud/venv/bin/python", "/var/local/load_loop.py", "8"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(2)
        bundle = machine.path("/var/lib/edgetpud/models/second")
        bundle.mkdir()
        shutil.copyfile(test_data / f"{MODEL}.tflite", bundle / "model.tflite")
        machine.run("systemctl", "reload", "edgetpud.service")

        def listed() -> bool:
            models = json.loads(machine.ctl("--json", "models", "list").stdout)["models"]
            return any(m["name"] == "second" and m.get("state") == "ready" for m in models)

        wait_until(listed, 30, "the new bundle to be served after reload")
        out, err = loop.communicate(timeout=60)
    finally:
        if loop.poll() is None:
            loop.kill()
            loop.communicate()
    result = json.loads(out or "{}") if loop.returncode == 0 else {"error": err}
    assert result.get("failed") == [] and result.get("ok", 0) > 0, result
    assert machine.ctl("--json", "classify", "--model", "second", "/var/local/cat.bmp").returncode == 0


def test_stop_ends_in_time_and_leaves_no_worker(machine: Machine):
    assert machine.run("pgrep", "-u", "edgetpud", check=False).stdout.split(), "no process runs as edgetpud"
    start = time.monotonic()
    machine.run("systemctl", "stop", "edgetpud.service", timeout=TIMEOUT_STOP_S + 10)
    MEASURED["stop"] = took = time.monotonic() - start
    assert took < TIMEOUT_STOP_S
    assert machine.show("Result")["Result"] == "success"  # not "timeout": nothing needed SIGKILL
    assert machine.run("pgrep", "-u", "edgetpud", check=False).returncode == 1
    machine.run("systemctl", "start", "edgetpud.service")


def test_bad_config_fails_once_with_one_clear_line(machine: Machine):
    config = machine.path("/etc/edgetpud/edgetpud.toml")
    good = config.read_text()
    before = int(machine.show("NRestarts")["NRestarts"])
    cursor = journal_cursor(machine)
    config.write_text(good + '\nqueue_dept = 8\n')
    try:
        assert machine.run("systemctl", "restart", "edgetpud.service", check=False).returncode != 0
        time.sleep(RESTART_S + 3)  # a restart, were there one, would have happened by now
        props = machine.show("ActiveState", "NRestarts", "ExecMainStatus")
        assert (props["ActiveState"], props["ExecMainStatus"]) == ("failed", "2")
        assert int(props["NRestarts"]) == before
        lines = [line for line in journal_since(machine, cursor).splitlines() if "queue_dept" in line]
        assert len(lines) == 1, lines
        assert "/etc/edgetpud/edgetpud.toml" in lines[0], lines[0]
    finally:
        config.write_text(good)
        machine.run("systemctl", "reset-failed", "edgetpud.service")
        machine.run("systemctl", "start", "edgetpud.service")


def try_write(machine: Machine, pid: str, path: str) -> Tuple[int, str]:
    """Write ``path`` as root from inside the service's own mount namespace."""
    done = machine.run("nsenter", "-t", pid, "-m", "--", "sh", "-c", f"echo probe > {path}", check=False)
    return done.returncode, done.stderr


def test_hardening_holds_in_fact(machine: Machine):
    pid = machine.show("MainPID")["MainPID"]
    for path in ("/etc/probe", "/usr/probe", "/opt/edgetpud/probe", "/var/lib/probe", "/var/local/probe",
                 "/root/probe", "/home/alice/probe"):
        code, err = try_write(machine, pid, path)
        assert code != 0, f"the service could write {path}"
        assert not machine.path(path).exists()
        # ProtectSystem=strict: read-only; ProtectHome=yes: /root and /home are empty and closed.
        assert any(why in err for why in ("Read-only file system", "Permission denied", "Directory nonexistent")), err
    for path in ("/var/lib/edgetpud/probe", "/run/edgetpud/probe"):
        assert try_write(machine, pid, path) == (0, ""), path
        machine.run("rm", path)
    score = machine.run("systemd-analyze", "security", "edgetpud.service").stdout
    exposure = float(re.search(r"Overall exposure level for edgetpud\.service: ([\d.]+)", score).group(1))
    assert exposure <= 2.0, score[-400:]


def snapshot(machine: Machine) -> Dict[str, Tuple]:
    """Every installed file's path, mode, owner and content hash (byte code caches aside)."""
    import hashlib

    seen: Dict[str, Tuple] = {}
    roots = ["/opt/edgetpud", "/etc/edgetpud", "/etc/systemd/system", "/etc/udev/rules.d",
             "/usr/lib/sysusers.d/edgetpud.conf", "/usr/lib/tmpfiles.d/edgetpud.conf",
             "/etc/passwd", "/etc/group", "/var/lib/edgetpud"]
    for inside in roots:
        top = machine.path(inside)
        paths = [top] if not top.is_dir() else [top, *top.rglob("*")]
        for path in paths:
            if "__pycache__" in path.parts:
                continue
            st = path.lstat()
            if path.is_symlink():
                content = os.readlink(path)
            elif path.is_file():
                content = hashlib.sha256(path.read_bytes()).hexdigest()
            else:
                content = ""
            seen[str(path.relative_to(machine.container.merged))] = (st.st_mode, st.st_uid, st.st_gid, content)
    return seen


def test_install_twice_changes_nothing_and_keeps_the_edited_config(machine: Machine):
    config = machine.path("/etc/edgetpud/edgetpud.toml")
    config.write_text(config.read_text() + "\n# edited by the operator\ngrace_s = 5.0\n")
    before = snapshot(machine)
    done = machine.install()
    assert "keeping the existing /etc/edgetpud/edgetpud.toml" in done.stdout
    after = snapshot(machine)
    changed = sorted(set(before.items()) ^ set(after.items()))
    assert not changed, changed[:10]
    assert "# edited by the operator" in config.read_text()
    assert machine.show("ActiveState")["ActiveState"] == "active"


def test_uninstall_removes_all_but_the_state_folder(machine: Machine):
    done = machine.run(f"/srv/edgetpud-src/scripts/install-on-device", "--yes", "--uninstall", timeout=120)
    assert "kept /var/lib/edgetpud" in done.stdout
    for gone in ("/opt/edgetpud", "/etc/edgetpud", "/etc/systemd/system/edgetpud.service",
                 "/etc/systemd/system/multi-user.target.wants/edgetpud.service", "/etc/udev/rules.d/99-edgetpu.rules",
                 "/usr/lib/sysusers.d/edgetpud.conf", "/usr/lib/tmpfiles.d/edgetpud.conf"):
        assert not machine.path(gone).exists(), f"{gone} is still there"
    assert machine.path(f"/var/lib/edgetpud/models/{MODEL}/model.tflite").is_file()
    assert machine.run("pgrep", "-u", "edgetpud", check=False).returncode == 1
    assert machine.show("LoadState")["LoadState"] == "not-found"
