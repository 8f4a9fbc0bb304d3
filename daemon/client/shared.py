"""Frames handed to a daemon on the same host through shared memory, so no pixels cross gRPC.

A ``SharedFrames`` is a ring of equal slots in one POSIX shared-memory object
(``/dev/shm/NAME``, mode 0600: only this user, and root, can open it; the daemon
serves a region only to a caller who could open it too). It is registered with
the daemon's shared-memory registry, the one KServe's ``SystemSharedMemoryRegister``
fills, and each frame is sent as a ``SharedFrame`` naming its slot's span.

A slot is written only when free: ``put`` (or ``acquire``) takes a free slot, and
the client gives it back when the frame's answer arrives (a unary call when it
returns, a stream frame when its result is read). So a stream with several frames
in flight never has a frame overwritten before the daemon has read it.
"""
from __future__ import annotations

import collections
import mmap
import os
import threading
import uuid
import weakref
from pathlib import Path
from typing import Any, Callable, Deque, Optional, Tuple

import numpy as np

from .types import SharedFrame

SHM_ROOT = Path("/dev/shm")
CHANNELS = {"RGB": 3, "BGR": 3, "RGBA": 4, "BGRA": 4, "GRAY": 1}


class SharedFrames:
    """``slots`` frames of ``width`` x ``height`` ``pixel_format`` in one registered region.

    Made by :meth:`edgetpud.client.Client.shared_frames`; close it (or use ``with``) to
    unregister the region and remove the object.
    """

    def __init__(self, register: Callable[[str, str, int], None], unregister: Callable[..., None],
                 width: int, height: int, pixel_format: str = "RGB", slots: int = 4,
                 name: Optional[str] = None) -> None:
        fmt = pixel_format.upper()
        if fmt not in CHANNELS:
            raise ValueError(f"unknown pixel format {pixel_format!r}; use one of {sorted(CHANNELS)}")
        if width < 1 or height < 1 or slots < 1:
            raise ValueError(f"width, height and slots must be positive, got {width}, {height}, {slots}")
        self.width, self.height, self.pixel_format = int(width), int(height), fmt
        self.shape: Tuple[int, ...] = (self.height, self.width) + ((CHANNELS[fmt],) if CHANNELS[fmt] > 1 else ())
        self.slot_bytes = self.height * self.width * CHANNELS[fmt]
        self.slots = int(slots)
        self.name = name or f"edgetpud-frames-{os.getpid()}-{uuid.uuid4().hex[:12]}"
        self.key = "/" + self.name
        self._unregister = unregister
        self._free: Deque[int] = collections.deque(range(self.slots))
        self._cond = threading.Condition()
        size = self.slot_bytes * self.slots
        path = SHM_ROOT / self.name
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.ftruncate(fd, size)
            self._map: Optional[mmap.mmap] = mmap.mmap(fd, size)
        except BaseException:
            path.unlink()
            raise
        finally:
            os.close(fd)
        try:
            register(self.name, self.key, size)
        except BaseException:
            self._map.close()
            path.unlink()
            raise
        # a ring never closed (dropped, or still open when the program exits) is unregistered and removed
        # then; a process killed by a signal it does not handle cannot do even that (see docs/camera.md)
        self._finalizer = weakref.finalize(self, _remove_quietly, unregister, self.name, path)

    def acquire(self, timeout: Optional[float] = None) -> Tuple[np.ndarray, SharedFrame]:
        """A free slot to write a frame into (``HxWxC`` uint8 view) and the SharedFrame to send.

        Waits up to ``timeout`` seconds (None: for ever) for a slot whose frame was answered.

        Raises:
            TimeoutError: every slot still holds a frame not yet answered.
            ValueError: the ring is closed.
        """
        with self._cond:
            if not self._cond.wait_for(lambda: bool(self._free) or self._map is None, timeout):
                raise TimeoutError(
                    f"all {self.slots} shared frame slots hold frames not yet answered. A slot is free again "
                    "once its frame's call is answered: a unary call returns, a stream result is read, an "
                    "add_samples call ends (so one call can send at most as many shared samples as there "
                    "are slots). Read the results, or make the ring with more slots")
            if self._map is None:
                raise ValueError("the shared frames are closed")
            slot = self._free.popleft()
            view = np.ndarray(self.shape, np.uint8, buffer=self._map, offset=slot * self.slot_bytes)
        frame = SharedFrame(self.name, slot * self.slot_bytes, self.slot_bytes, self.width, self.height,
                            pixel_format=self.pixel_format, release=_Release(self, slot))
        return view, frame

    def put(self, image: Any, timeout: Optional[float] = None) -> SharedFrame:
        """Copy ``image`` (an array of this ring's shape) into a free slot; the SharedFrame to send.

        Raises:
            ValueError: the image's shape or dtype is not this ring's. TimeoutError: see :meth:`acquire`.
        """
        array = np.asarray(image)
        if array.dtype != np.uint8 or array.shape != self.shape:
            raise ValueError(f"these shared frames hold uint8 {list(self.shape)}, got {array.dtype} "
                             f"{list(array.shape)}")
        view, frame = self.acquire(timeout)
        np.copyto(view, array)
        return frame

    def _give_back(self, slot: int) -> None:
        with self._cond:
            if slot not in self._free:
                self._free.append(slot)
            self._cond.notify()

    def close(self) -> None:
        """Unregister the region and remove the object (idempotent)."""
        with self._cond:
            mapping, self._map = self._map, None
            self._cond.notify_all()
        if mapping is None:
            return
        self._finalizer.detach()
        try:
            self._unregister(self.name)
        finally:
            try:
                mapping.close()
            except BufferError:  # a view is still held: the mapping goes when it does
                pass
            try:
                (SHM_ROOT / self.name).unlink()
            except FileNotFoundError:
                pass

    def __enter__(self) -> "SharedFrames":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


#: How long a forgotten ring's clean-up waits for the daemon: it runs at exit, which must not hang.
CLEANUP_TIMEOUT_S = 2.0


def _remove_quietly(unregister: Callable[..., None], name: str, path: Path) -> None:
    """A forgotten ring's clean-up: the daemon or the channel may be gone already, so nothing is raised."""
    try:
        unregister(name, timeout=CLEANUP_TIMEOUT_S)
    except Exception:  # noqa: BLE001 - at exit or in the collector there is nobody to tell
        pass
    try:
        path.unlink()
    except OSError:
        pass


class _Release:
    """One frame's hold on its slot: sent at most once, and giving the slot back once.

    A frame sent a second time before its answer would free the slot at the first answer while
    the daemon still has the second copy to read, so ``claim`` refuses that as it refuses a
    frame already answered.
    """

    def __init__(self, frames: SharedFrames, slot: int) -> None:
        self._frames, self._slot = frames, slot
        self.sent = self.done = False

    def claim(self) -> None:
        """Mark the frame sent.

        Raises:
            ValueError: it was sent already, or answered (its slot may hold another frame now).
        """
        with self._frames._cond:
            if self.done:
                raise ValueError("this SharedFrame was answered already and its slot given back, so the slot "
                                 "may hold another frame now: a SharedFrame goes with one call; acquire() or "
                                 "put() a new one")
            if self.sent:
                raise ValueError("this SharedFrame is being sent already: a SharedFrame goes with one call "
                                 "(its slot is freed at that call's answer); acquire() or put() a new one")
            self.sent = True

    def __call__(self) -> None:
        with self._frames._cond:
            if self.done:
                return
            self.done = True
        self._frames._give_back(self._slot)


def release(value: Any) -> None:
    """Free a SharedFrame's slot once its answer came (anything else holds nothing)."""
    if isinstance(value, SharedFrame) and value.release is not None:
        value.release()


class InFlight:
    """One stream's frames sent and not yet answered, in order (the daemon answers in frame order).

    Each answer read frees the oldest frame's slot; closing frees all of them, and a frame
    the sending thread hands over after that is freed at once and not sent.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sent: Deque[Any] = collections.deque()
        self._closed = False

    def sent(self, value: Any) -> bool:
        """Record ``value`` as sent; False (and its slot freed) when the stream has ended."""
        with self._lock:
            if not self._closed:
                self._sent.append(value if isinstance(value, SharedFrame) else None)
                return True
        release(value)
        return False

    def answered(self) -> None:
        with self._lock:
            value = self._sent.popleft() if self._sent else None
        release(value)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            held, self._sent = list(self._sent), collections.deque()
        for value in held:
            release(value)
