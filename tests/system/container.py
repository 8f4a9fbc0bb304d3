"""A Debian container booted under a real systemd (systemd-nspawn), driven from outside.

Why a container: the unit file's promises (Type=notify, the watchdog, the hardening,
the group-only socket) are kept by systemd, not by edgetpud, so only a real systemd
as PID 1 can show they hold. The root is made once by debootstrap and cached outside
the clone, keyed by the Debian suite; each boot runs on an overlay of it, so the cached
root stays pristine and a session starts from a fresh machine.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence

SUITE = "bookworm"
CACHE = Path(os.environ.get("EDGETPUD_SYSTEM_TEST_CACHE", "/var/cache/edgetpud-system-tests"))
PACKAGES = "systemd,systemd-sysv,dbus,python3,python3-venv,udev,procps"
#: What a command run inside sees: the host's variables (PIP_FIND_LINKS and the like) stay out.
CLEAN_ENV = ["env", "-i", "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
             "LANG=C.UTF-8", "SYSTEMD_PAGER=", "SYSTEMD_COLORS=0"]
TOOLS = ("systemd-nspawn", "debootstrap", "nsenter", "mount", "umount")


def why_not_bootable() -> Optional[str]:
    """The reason this machine cannot boot a container, or None when it can."""
    if os.geteuid() != 0:
        return "booting a container needs root"
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    if missing:
        return f"missing {', '.join(missing)}: apt-get install systemd-container debootstrap"
    if "overlay" not in Path("/proc/filesystems").read_text():
        return "the kernel has no overlayfs, which the container's throwaway root needs"
    return None


def cached_root(suite: str = SUITE, cache: Path = CACHE) -> Path:
    """The cached minimal root of ``suite``, made by debootstrap the first time (about a minute)."""
    root = cache / suite
    if (root / "usr/bin/python3").exists() and (root / "lib/systemd/systemd").exists():
        return root
    partial = cache / f"{suite}.partial"
    shutil.rmtree(partial, ignore_errors=True)
    cache.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["debootstrap", "--variant=minbase", f"--include={PACKAGES}", suite, str(partial)],
                          capture_output=True, text=True, timeout=900)
    if done.returncode != 0:
        tail = "\n".join((done.stdout + done.stderr).splitlines()[-15:])
        raise RuntimeError(f"debootstrap {suite} failed (exit {done.returncode}):\n{tail}")
    partial.rename(root)  # only a complete root ever has the cached name
    return root


class Container:
    """One boot of ``root`` (read-only lower layer) with the host folders ``binds`` mounted read-only."""

    def __init__(self, root: Path, binds: Dict[Path, str]) -> None:
        self.root = root
        self.binds = binds
        self.workdir = Path(tempfile.mkdtemp(prefix="edgetpud-system-", dir="/var/tmp"))
        self.merged = self.workdir / "merged"
        self.console = self.workdir / "console.log"
        self.nspawn: Optional[subprocess.Popen] = None
        self.init_pid = 0

    def boot(self, timeout: float = 90.0) -> "Container":
        """Mount the overlay, start systemd-nspawn, and wait until the container's systemd is up."""
        for name in ("upper", "work", "merged"):
            (self.workdir / name).mkdir()
        subprocess.run(["mount", "-t", "overlay", "overlay", "-o",
                        f"lowerdir={self.root},upperdir={self.workdir / 'upper'},workdir={self.workdir / 'work'}",
                        str(self.merged)], check=True, capture_output=True, text=True)
        argv = ["systemd-nspawn", "--register=no", "--keep-unit", "--quiet", "--console=pipe",
                "-b", "-D", str(self.merged)]
        argv += [f"--bind-ro={host}:{inside}" for host, inside in self.binds.items()]
        with open(self.console, "wb") as out:
            self.nspawn = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
        self.init_pid = self._find_init(timeout)
        end = time.monotonic() + timeout
        while True:  # until systemd has its private socket, systemctl says nothing or "offline"
            done = self.run("systemctl", "is-system-running", "--wait", check=False, timeout=timeout)
            state = done.stdout.strip()
            if state in ("running", "degraded"):
                return self
            if state not in ("", "offline") or time.monotonic() > end:
                raise RuntimeError(f"the container's systemd is {state!r} ({done.stderr.strip()}); "
                                   f"console:\n{self.console_tail()}")
            time.sleep(0.2)

    def _find_init(self, timeout: float) -> int:
        """The host pid of the container's PID 1: the descendant of nspawn whose innermost pid is 1."""
        assert self.nspawn is not None
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.nspawn.poll() is not None:
                raise RuntimeError(f"systemd-nspawn exited {self.nspawn.returncode}:\n{self.console_tail()}")
            for pid in _descendants(self.nspawn.pid):
                nspid = _status_field(pid, "NSpid").split()
                # Until systemd is exec'd, PID 1 is nspawn's own child, still setting the namespaces up.
                if len(nspid) > 1 and nspid[-1] == "1" and _status_field(pid, "Name") == "systemd":
                    return pid
            time.sleep(0.1)
        raise RuntimeError(f"no init process in the container after {timeout:.0f} s:\n{self.console_tail()}")

    def run(self, *argv: str, user: Optional[str] = None, check: bool = True, timeout: float = 60.0,
            input: Optional[str] = None) -> subprocess.CompletedProcess:
        """Run ``argv`` inside (every namespace of PID 1), as root or as ``user`` with that user's groups."""
        prefix: List[str] = ["nsenter", "-t", str(self.init_pid), "-a", *CLEAN_ENV]
        if user is not None:
            prefix += ["setpriv", f"--reuid={user}", f"--regid={user}", "--init-groups", "--"]
        done = subprocess.run([*prefix, *argv], capture_output=True, text=True, timeout=timeout, input=input)
        if check and done.returncode != 0:
            raise AssertionError(f"{' '.join(argv)} (as {user or 'root'}) exited {done.returncode}:\n"
                                 f"{done.stdout}{done.stderr}")
        return done

    def path(self, inside: str) -> Path:
        """Where a path of the container is on the host (to write files in without a shell)."""
        return self.merged / inside.lstrip("/")

    def console_tail(self, lines: int = 30) -> str:
        """The end of the container's console, for error messages."""
        try:
            return "\n".join(self.console.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no console output)"

    def shutdown(self, timeout: float = 30.0) -> None:
        """Power the container off (SIGTERM makes nspawn ask systemd to halt), then drop the overlay."""
        if self.nspawn is not None and self.nspawn.poll() is None:
            self.nspawn.terminate()
            try:
                self.nspawn.wait(timeout)
            except subprocess.TimeoutExpired:
                self.nspawn.kill()
                self.nspawn.wait(10)
        subprocess.run(["umount", str(self.merged)], capture_output=True)
        shutil.rmtree(self.workdir, ignore_errors=True)


def _status_field(pid: int, name: str) -> str:
    """One field of /proc/PID/status, or '' when the process is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(name + ":"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return ""


def _descendants(pid: int) -> Sequence[int]:
    """Every live descendant of ``pid``, parents before children."""
    children: Dict[int, List[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            parent = _status_field(int(entry.name), "PPid")
            if parent.isdigit():
                children.setdefault(int(parent), []).append(int(entry.name))
    found: List[int] = []
    todo = list(children.get(pid, []))
    while todo:
        child = todo.pop(0)
        found.append(child)
        todo.extend(children.get(child, []))
    return found
