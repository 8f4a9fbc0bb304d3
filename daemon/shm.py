"""Shared-memory regions that apps on this host register, so frames and tensors need not cross gRPC.

This is Triton's system shared-memory extension: a region is a name for ``byte_size`` bytes at
``offset`` in a POSIX shared-memory object (``/dev/shm/KEY``), and a request names a region, an
offset in it and a size instead of sending the bytes.

Why the object is read with ``pread``/``pwrite`` on a file descriptor and not through ``mmap``:
another process can truncate the object at any instant, and touching a mapped page past the new
end raises SIGBUS, which kills the daemon with every client on it. A size check before the copy
cannot close that window; a ``pread`` past the end returns fewer bytes instead, which becomes a
clean error. The copy costs what copying out of a mapping would (tmpfs pages are memory).

Every access checks that the object at ``/dev/shm/KEY`` is still the one registered (same inode)
and still holds the region, and that the caller could open the object itself (``Caller``).
Plain library code: no gRPC; the API layer says who the caller is.
"""
from __future__ import annotations

import errno
import logging
import os
import pwd
import stat
import threading
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, FrozenSet, List, Optional

import numpy as np

from edgetpud.daemon.errors import (AlreadyExistsError, InvalidArgumentError, NotFoundError,
                                    PermissionDeniedError, ResourceExhaustedError)

log = logging.getLogger(__name__)

SHM_ROOT = Path("/dev/shm")
#: Regions registered at once; each holds one open file descriptor.
MAX_REGIONS = 256
MAX_NAME = 255


@dataclass(frozen=True)
class Caller:
    """Who may have sent a request: every uid it can be from, and how it came (for messages).

    The API layer cannot always tell one uid (gRPC hides a unix socket's peer), so this is the
    set of candidates; an object is usable only when every one of them could open it.
    """

    uids: FrozenSet[int]
    where: str


@dataclass(frozen=True)
class RegionInfo:
    """What SystemSharedMemoryStatus reports of a region."""

    name: str
    key: str
    offset: int
    byte_size: int


def _groups_of(uid: int) -> FrozenSet[int]:
    try:
        entry = pwd.getpwuid(uid)
    except KeyError:
        return frozenset()
    try:
        return frozenset(os.getgrouplist(entry.pw_name, entry.pw_gid))
    except (KeyError, OSError):
        return frozenset({entry.pw_gid})


def may_open(st: os.stat_result, uid: int, write: bool) -> bool:
    """Whether ``uid`` could open a file of owner/group/mode ``st`` for reading (and writing)."""
    if uid == 0:
        return True
    if st.st_uid == uid:
        read_bit, write_bit = stat.S_IRUSR, stat.S_IWUSR
    elif st.st_gid in _groups_of(uid):
        read_bit, write_bit = stat.S_IRGRP, stat.S_IWGRP
    else:
        read_bit, write_bit = stat.S_IROTH, stat.S_IWOTH
    return bool(st.st_mode & read_bit) and (not write or bool(st.st_mode & write_bit))


def check_caller(caller: Caller, st: os.stat_result, what: str, write: bool) -> None:
    """Raises: PermissionDeniedError: some uid the request may come from could not open the object."""
    if not caller.uids:
        raise PermissionDeniedError(f"{what}: cannot tell which user the caller ({caller.where}) runs as, so "
                                    "shared memory is refused; connect over the unix socket or TCP on this host")
    denied = sorted(uid for uid in caller.uids if not may_open(st, uid, write))
    if denied:
        access = "read and write" if write else "read"
        raise PermissionDeniedError(
            f"{what}: the caller ({caller.where}, uid {', '.join(map(str, denied))}) could not {access} it "
            f"itself (owner uid {st.st_uid}, group {st.st_gid}, mode {stat.S_IMODE(st.st_mode):04o}); a region "
            "must be an object its user may open (create it as that user, or give its group access)")


def object_path(root: Path, key: str) -> Path:
    """``/dev/shm/KEY`` for a shm_open key ("/name" or "name").

    Raises:
        InvalidArgumentError: the key is empty or names anything but one object in ``root``.
    """
    name = key[1:] if key.startswith("/") else key
    if not name or "/" in name or name in (".", "..") or "\0" in name or len(name) > MAX_NAME:
        raise InvalidArgumentError(f"shared memory key '{key}' is not a POSIX shm name: use '/NAME' (one "
                                   "name, no other '/'), as shm_open and tritonclient's shared_memory take")
    return root / name


class Region:
    """One registered region: an open descriptor on its object, read and written in bounds."""

    def __init__(self, name: str, key: str, path: Path, offset: int, byte_size: int, fd: int,
                 writable: bool, on_removed: Callable[["Region"], None] = lambda region: None) -> None:
        """``on_removed`` is told when a check finds the object removed: the region can never serve again."""
        self.name, self.key, self.path = name, key, path
        self.offset, self.byte_size, self.writable = offset, byte_size, writable
        self._fd = fd
        self._on_removed = on_removed
        st = os.fstat(fd)
        self._identity = (st.st_dev, st.st_ino)
        # Closed when the last request using the region lets go of it, not at Unregister.
        weakref.finalize(self, os.close, fd)

    @property
    def info(self) -> RegionInfo:
        return RegionInfo(self.name, self.key, self.offset, self.byte_size)

    def _span(self, offset: int, size: int, tensor: str) -> int:
        """The object offset of ``size`` bytes at ``offset`` in the region.

        Raises:
            InvalidArgumentError: the span is negative or runs past the region.
        """
        if offset < 0 or size < 0 or offset + size > self.byte_size:
            raise InvalidArgumentError(
                f"{tensor}: {size} bytes at offset {offset} do not fit in shared memory region '{self.name}' "
                f"({self.byte_size} bytes): shared_memory_offset + shared_memory_byte_size must be at most "
                "the registered byte_size")
        return self.offset + offset

    def _at_path(self) -> Optional[os.stat_result]:
        """The object at the region's path when it is still the one registered, else None."""
        try:
            at_path = os.stat(self.path)
        except OSError:
            return None
        return at_path if (at_path.st_dev, at_path.st_ino) == self._identity else None

    def removed(self) -> bool:
        """Whether the object at the region's path is gone or another one: the region can never serve again."""
        return self._at_path() is None

    def live(self, caller: Caller, write: bool) -> os.stat_result:
        """The object's state now, checked: still at its path, big enough, openable by ``caller``.

        Raises:
            NotFoundError: the object was removed or replaced since it was registered (``on_removed`` is
                told first).
            InvalidArgumentError: it shrank below the region.
            PermissionDeniedError: the caller could not open it itself.
        """
        st = os.fstat(self._fd)
        at_path = self._at_path()
        if at_path is None:
            self._on_removed(self)
            raise NotFoundError(f"the shared memory object {self.path} of region '{self.name}' was removed or "
                                "replaced since it was registered, so the region is unregistered: register "
                                "it again")
        if st.st_size < self.offset + self.byte_size:
            raise InvalidArgumentError(f"the shared memory object {self.path} of region '{self.name}' shrank to "
                                       f"{st.st_size} bytes; the region needs {self.offset + self.byte_size}: "
                                       "unregister it and register it again")
        check_caller(caller, at_path, f"shared memory region '{self.name}'", write)
        return st

    def read(self, offset: int, size: int, caller: Caller, tensor: str) -> np.ndarray:
        """A private copy of ``size`` bytes at ``offset`` (a uint8 array), read without a mapping.

        Raises:
            NotFoundError, InvalidArgumentError, PermissionDeniedError: see ``live`` and ``_span``.
        """
        at = self.check(offset, size, caller, tensor, write=False)
        out = np.empty(size, np.uint8)
        got = os.preadv(self._fd, [out], at) if size else 0
        if got != size:
            raise InvalidArgumentError(f"{tensor}: the shared memory object {self.path} of region '{self.name}' "
                                       f"shrank while it was read ({got} of {size} bytes)")
        return out

    def check(self, offset: int, size: int, caller: Caller, tensor: str, write: bool) -> int:
        """The object offset of the span, once bounds, writability, the object and the caller are checked.

        Raises:
            InvalidArgumentError: out of bounds, or written while read-only; see ``live`` for the rest.
        """
        at = self._span(offset, size, tensor)
        if write and not self.writable:
            raise InvalidArgumentError(f"{tensor}: shared memory region '{self.name}' is read-only for edgetpud "
                                       f"({self.path} is not writable by the caller); use a writable region "
                                       "for outputs")
        self.live(caller, write)
        return at

    def write(self, offset: int, data: memoryview, caller: Caller, tensor: str) -> None:
        """Write ``data`` at ``offset``.

        Raises:
            InvalidArgumentError, NotFoundError, PermissionDeniedError: see ``check``.
        """
        at = self.check(offset, len(data), caller, tensor, write=True)
        done = 0
        while done < len(data):
            done += os.pwrite(self._fd, data[done:], at + done)


class SharedMemoryRegistry:
    """The regions registered on this daemon, by name (one registry for KServe and the native API)."""

    def __init__(self, root: Path = SHM_ROOT, max_regions: int = MAX_REGIONS) -> None:
        self._root = Path(root)
        self._max = max_regions
        self._regions: Dict[str, Region] = {}
        self._lock = threading.Lock()

    def register(self, name: str, key: str, offset: int, byte_size: int, caller: Caller) -> RegionInfo:
        """Open ``/dev/shm/KEY`` and name ``byte_size`` bytes of it at ``offset``.

        Raises:
            InvalidArgumentError: a bad name, key, offset or size, or an object too small.
            NotFoundError: no such object. AlreadyExistsError: the name is taken.
            PermissionDeniedError: the caller could not open the object itself.
            ResourceExhaustedError: too many regions.
        """
        if not name or len(name) > MAX_NAME:
            raise InvalidArgumentError("a shared memory region needs a name (at most 255 characters)")
        if offset < 0 or byte_size <= 0:
            raise InvalidArgumentError(f"shared memory region '{name}': offset must be >= 0 and byte_size > 0 "
                                       f"(got offset {offset}, byte_size {byte_size})")
        path = object_path(self._root, key)
        with self._lock:
            if name in self._regions and self._regions[name].removed():
                del self._regions[name]  # an app restarted after a kill takes its old name again
            if name in self._regions:
                raise AlreadyExistsError(f"shared memory region '{name}' is already registered: unregister it "
                                         "first, or choose another name")
            if len(self._regions) >= self._max:
                self._sweep()
            if len(self._regions) >= self._max:
                raise ResourceExhaustedError(f"{self._max} shared memory regions are registered, the most "
                                             "edgetpud keeps: unregister some first")
        fd = self._open(path, key, name)
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise InvalidArgumentError(f"shared memory key '{key}' ({path}) is not a shared memory object")
            check_caller(caller, st, f"shared memory object {path}", write=False)
            writable = os.access(path, os.W_OK) and all(may_open(st, uid, True) for uid in caller.uids)
            if st.st_size < offset + byte_size:
                raise InvalidArgumentError(f"shared memory region '{name}': {byte_size} bytes at offset {offset} "
                                           f"run past the end of {path} ({st.st_size} bytes)")
            region = Region(name, key, path, offset, byte_size, fd, writable, self._forget)
        except BaseException:
            os.close(fd)
            raise
        with self._lock:
            if name in self._regions:
                raise AlreadyExistsError(f"shared memory region '{name}' is already registered")
            self._regions[name] = region
        log.info("shared memory region %s registered: %s, %d bytes at %d (%s, from %s)", name, path, byte_size,
                 offset, "read-write" if writable else "read-only", caller.where)
        return region.info

    @staticmethod
    def _open(path: Path, key: str, name: str) -> int:
        flags = os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
        try:
            try:
                return os.open(path, os.O_RDWR | flags)
            except PermissionError:
                return os.open(path, os.O_RDONLY | flags)
        except FileNotFoundError:
            raise NotFoundError(f"shared memory region '{name}': no shared memory object '{key}' ({path}); "
                                "create it first (shm_open, or tritonclient's create_shared_memory_region)") from None
        except OSError as exc:
            if exc.errno in (errno.EISDIR, errno.ELOOP):
                raise InvalidArgumentError(f"shared memory key '{key}' ({path}) is not a shared memory object "
                                           "(a folder or a symbolic link)") from None
            raise PermissionDeniedError(f"shared memory region '{name}': edgetpud cannot open {path} "
                                        f"({exc.strerror})") from None

    def unregister(self, name: str = "") -> None:
        """Forget ``name`` (every region when empty); an unknown name is no error, as in Triton.

        A request already using the region finishes with it: its descriptor closes with the last user.
        """
        with self._lock:
            if name:
                self._regions.pop(name, None)
            else:
                self._regions.clear()

    def status(self, name: str = "") -> List[RegionInfo]:
        """The regions registered (``name`` alone when set), those whose objects were removed dropped first.

        Raises:
            NotFoundError: ``name`` is set and not registered (or its object was removed).
        """
        if name:
            region = self.region(name)
            if region.removed():
                self._forget(region)
                raise NotFoundError(f"shared memory region '{name}' is unregistered: its object {region.path} "
                                    "was removed")
            return [region.info]
        with self._lock:
            self._sweep()
            return [r.info for r in self._regions.values()]

    def region(self, name: str) -> Region:
        """Raises: NotFoundError: no region of that name."""
        region = self._regions.get(name)
        if region is None:
            raise NotFoundError(f"no shared memory region '{name}' is registered "
                                "(SystemSharedMemoryRegister it first; SystemSharedMemoryStatus lists them)")
        return region

    def _forget(self, region: Region) -> None:
        """Unregister ``region``, whose object was removed: it cannot serve again, and a camera app killed
        before it unregistered would otherwise leave it (and the descriptor holding its memory) for ever."""
        with self._lock:
            if self._regions.get(region.name) is region:
                del self._regions[region.name]
                log.info("shared memory region %s unregistered: its object %s was removed", region.name,
                         region.path)

    def _sweep(self) -> None:
        """Drop the regions whose objects were removed (called with the lock held)."""
        for name in [n for n, r in self._regions.items() if r.removed()]:
            log.info("shared memory region %s unregistered: its object was removed", name)
            del self._regions[name]

    def close(self) -> None:
        self.unregister()

