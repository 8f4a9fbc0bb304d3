"""The mock world, shared between the main process and the device workers.

Discovery (main process) must see an unplug that the executor (a worker process)
also sees, and a fault queued from a test must be consumed by the worker that runs
the next invocation. The world therefore lives in a state directory: one JSON file
per device, replaced atomically (write a temp file, ``os.replace``), with an
``fcntl`` lock around read-modify-write so a queued fault is consumed exactly once.
Readers cache by ``(mtime_ns, size)``, so the per-invoke check costs one ``stat``.

Layout::

    <state_dir>/devices/mock_0.json   {"plugged": true, "latency_s": null, "faults": [...]}
    <state_dir>/sys/class/apex/apex_0/temp ...   (fake sysfs tree, see sysfs.py)
    <state_dir>/.lock
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple, Union

log = logging.getLogger(__name__)

EXECUTOR_FAULTS = ("abort", "hang", "error", "timeout")
FAULTS = EXECUTOR_FAULTS


def _plugged(state: Dict[str, Any]) -> bool:
    return bool(state.get("plugged", True))


def _default_state() -> Dict[str, Any]:
    return {"plugged": True, "latency_s": None, "faults": []}


def write_atomic(path: Union[str, Path], text: str) -> None:
    """Replace ``path`` in one step so a reader in another process never sees half a file."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


class MockWorld:
    """File-backed state of every mock device; safe to use from any process."""

    def __init__(self, state_dir: Union[str, Path]) -> None:
        self.root = Path(state_dir)
        self._cache: Dict[str, Tuple[Tuple[int, int], Dict[str, Any]]] = {}
        self._paths: Dict[str, Path] = {}  # building a Path costs more than the stat of the per-invoke check

    @classmethod
    def create(cls, state_dir: Union[str, Path], count: int) -> "MockWorld":
        """Lay out a fresh world of ``count`` plugged-in devices (mock:0 .. mock:N-1) with a fake apex tree.

        A world left in the folder by an earlier run is replaced: every daemon start
        begins with healthy devices and no queued faults.
        """
        import shutil

        from .sysfs import FakeSysfs

        world = cls(state_dir)
        for old in ("devices", "sys"):
            shutil.rmtree(world.root / old, ignore_errors=True)
        (world.root / "devices").mkdir(parents=True, exist_ok=True)
        sysfs = FakeSysfs(world.sysfs_root)
        for i in range(count):
            write_atomic(world._path(f"mock:{i}"), json.dumps(_default_state()))
            sysfs.add_apex(i)
        return world

    @property
    def sysfs_root(self) -> Path:
        return self.root / "sys"

    def device_ids(self) -> List[str]:
        names = sorted((self.root / "devices").glob("mock_*.json"), key=lambda p: int(p.stem.split("_")[1]))
        return [f"mock:{p.stem.split('_')[1]}" for p in names]

    def _path(self, device_id: str) -> Path:
        path = self._paths.get(device_id)
        if path is None:
            path = self._paths[device_id] = self.root / "devices" / f"{device_id.replace(':', '_')}.json"
        return path

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        with open(self.root / ".lock", "a+") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def read(self, device_id: str) -> Dict[str, Any]:
        """The device's current state (cached until the file changes).

        Raises:
            KeyError: no such mock device.
        """
        path = self._path(device_id)
        try:
            st = os.stat(path)
        except FileNotFoundError:
            raise KeyError(f"no mock device {device_id} in {self.root}") from None
        stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
        cached = self._cache.get(device_id)
        if cached is not None and cached[0] == stamp:
            return cached[1]
        state = json.loads(path.read_text())
        self._cache[device_id] = (stamp, state)  # type: ignore[assignment]
        return state

    def update(self, device_id: str, change: Callable[[Dict[str, Any]], Any]) -> Any:
        """Apply ``change`` to the state under the lock and write it back; returns what it returns."""
        with self._locked():
            state = dict(self.read(device_id))
            state["faults"] = list(state.get("faults", []))
            result = change(state)
            write_atomic(self._path(device_id), json.dumps(state))
            self._cache.pop(device_id, None)
            return result

    # -- convenience used by both sides ------------------------------------
    def plugged(self, device_id: str) -> bool:
        return _plugged(self.read(device_id))

    def for_invoke(self, device_id: str, kinds: Tuple[str, ...]) -> Tuple[bool, Optional[float], Optional[Dict[str, Any]]]:
        """(plugged, latency_s, the first queued fault of ``kinds`` popped) from one ``stat`` when no fault waits.

        What every mock invocation asks, so it costs one state read rather than three.
        """
        state = self.read(device_id)
        value = state.get("latency_s")
        latency = None if value is None else float(value)
        if not _plugged(state):
            return False, latency, None  # the invocation fails before any fault is consumed
        return True, latency, self.take_fault(device_id, kinds, state)

    def take_fault(self, device_id: str, kinds: Tuple[str, ...],
                   state: Optional[Dict[str, Any]] = None) -> Optional[Dict[str, Any]]:
        """Pop the first queued fault of one of ``kinds``; cheap when none is queued (in ``state``, if read already)."""
        if state is None:
            state = self.read(device_id)
        if not any(f.get("fault") in kinds for f in state.get("faults", ())):
            return None

        def pop(state: Dict[str, Any]) -> Optional[Dict[str, Any]]:
            for i, fault in enumerate(state["faults"]):
                if fault.get("fault") in kinds:
                    return state["faults"].pop(i)
            return None

        fault = self.update(device_id, pop)
        if fault is not None:
            log.warning("mock %s: injected fault %s", device_id, fault)
        return fault
