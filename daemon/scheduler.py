"""Per-device queues in front of the device pool: affinity, deadlines, backpressure, retries.

The scheduler lives on the asyncio loop and owns no threads: the pool's futures
call back into the loop (directly when the pool reads its replies on the loop).
It only moves tensors to devices; images, versions and models are the registry's
and the service's business.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Awaitable, Callable, Deque, Dict, Iterable, List, Optional, Protocol, Sequence, Set, Tuple

import numpy as np

from edgetpud.hal.errors import DeviceUnavailableError

from .errors import EdgetpudError, PreconditionError, ResourceExhaustedError

log = logging.getLogger(__name__)

Loader = Callable[[str, str], Awaitable[None]]

#: A request still unanswered this long before its deadline is answered DEADLINE_EXCEEDED with the
#: daemon's reason: at the deadline itself the caller's gRPC gives up first, and all it can say is
#: "Deadline Exceeded". At most a tenth of the time the request had.
ANSWER_AHEAD_S = 0.2


class DeadlineExceededError(EdgetpudError, TimeoutError):
    """The request's deadline passed before a device could run it; it was not run."""


class PoolLike(Protocol):
    """What the scheduler needs of ``edgetpud.hal.DevicePool``."""

    def capacity(self, device_id: str) -> int: ...

    def submit(self, device_id: str, model_key: str, inputs: List[np.ndarray]) -> "concurrent.futures.Future": ...


@dataclass(frozen=True)
class InvokeResult:
    """Outputs of one invocation, where it ran, and how long it waited and ran."""

    outputs: List[np.ndarray]
    device: str
    queue_s: float
    invoke_s: float
    round_trip_s: float = 0.0


@dataclass(eq=False)
class _Request:
    model_key: str
    inputs: List[np.ndarray]
    deadline: Optional[float]
    future: "asyncio.Future[InvokeResult]"
    accepted: float
    attempts: int = 0
    queued_on: Optional[str] = None
    timer: Optional[asyncio.TimerHandle] = None
    started: float = 0.0
    excluded: Set[str] = field(default_factory=set)


def _answer_by(req: _Request) -> float:
    """When the daemon answers a request that is still unanswered (see ANSWER_AHEAD_S)."""
    assert req.deadline is not None
    return req.deadline - min(ANSWER_AHEAD_S, 0.1 * max(0.0, req.deadline - req.accepted))


class Scheduler:
    """Queues invocations per device and keeps every device busy while it has capacity."""

    def __init__(self, pool: PoolLike, queue_depth: int, loader: Optional[Loader] = None,
                 max_attempts: int = 2, invoke_timeout_s: Optional[float] = None) -> None:
        self._pool = pool
        self._invoke_timeout_s = invoke_timeout_s  # the pool's hang watchdog, named in deadline messages
        self._queue_depth = queue_depth
        self._loader = loader
        self._max_attempts = max_attempts
        self._queues: Dict[str, Deque[_Request]] = {}
        self._dispatching = False  # inside _dispatch: a request that fails at once finishes after it
        self._inflight: Dict[str, int] = {}
        self._usable: Set[str] = set()
        self._restarting: Set[str] = set()
        self._holders: Dict[str, Set[str]] = {}
        self._loading: Dict[Tuple[str, str], "asyncio.Future[None]"] = {}
        self._room_waiters: Dict[str, Deque["asyncio.Future[None]"]] = {}  # requests waiting for queue room
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._closed = False

    # ---- devices and placements (called by the service and the registry) ----

    def set_devices(self, usable: Iterable[str]) -> None:
        """Declare which devices accept work now; requests queued on a device that left are moved."""
        usable = set(usable)
        for device in sorted(self._usable - usable):
            self.device_lost(device, permanent=False)
        for device in usable:
            self._queues.setdefault(device, deque())
            self._inflight.setdefault(device, 0)
        self._usable = usable
        self._restarting -= usable
        for device in sorted(usable):
            self._dispatch(device)

    def device_lost(self, device: str, permanent: bool = True) -> None:
        """Stop sending work to ``device``; move its waiting requests to other devices.

        The pool reloads a device's models when its worker restarts, so placements are
        kept. When no other device can take them, waiting requests stay queued for a
        restarting device (``permanent=False``, their deadlines still apply) and fail
        with DeviceUnavailableError for a lost one. In-flight requests fail through
        their futures and are retried elsewhere when possible.
        """
        self._usable.discard(device)
        if permanent:
            self._restarting.discard(device)
        else:
            self._restarting.add(device)
        self._wake_room(device, everyone=True)  # they choose again, perhaps another device
        queue = self._queues.get(device)
        if not queue:
            return
        if not permanent and not self._usable:
            log.warning("device %s is restarting: %d queued request(s) wait for it", device, len(queue))
            return
        waiting = list(queue)
        queue.clear()
        log.warning("device %s left with %d queued request(s): moving them", device, len(waiting))
        for req in waiting:
            req.queued_on = None
            req.excluded.add(device)
            self._spawn(self._requeue(req))

    def placed(self, model_key: str, device: str) -> None:
        """``model_key`` is loaded on ``device``."""
        self._holders.setdefault(model_key, set()).add(device)

    def unplaced(self, model_key: str, device: Optional[str] = None) -> None:
        """``model_key`` was unloaded from ``device`` (or from every device)."""
        if device is None:
            self._holders.pop(model_key, None)
        else:
            self._holders.get(model_key, set()).discard(device)

    def holders(self, model_key: str) -> Set[str]:
        return set(self._holders.get(model_key, set()))

    def usable(self) -> Set[str]:
        """The devices requests are sent to now."""
        return set(self._usable)

    def queue_depths(self) -> Dict[str, int]:
        return {device: len(q) for device, q in self._queues.items()}

    def load_of(self, device: str) -> int:
        return len(self._queues.get(device, ())) + self._inflight.get(device, 0)

    # ---- requests ----

    async def run(self, model_key: str, inputs: Sequence[np.ndarray], deadline: Optional[float] = None,
                  wait_for_room: bool = False) -> InvokeResult:
        """Queue one invocation of ``model_key`` and wait for its outputs.

        ``deadline`` is an absolute ``time.monotonic()``. Cancelling the caller drops a
        queued request without running it. When the chosen device's queue is full, the
        request is refused at once, or, with ``wait_for_room`` (a stream's frames, whose
        sender gRPC flow control slows instead), waits for room until its deadline.

        Raises:
            DeadlineExceededError: the deadline passed before the request started.
            ResourceExhaustedError: the chosen device's queue is full (without ``wait_for_room``).
            DeviceUnavailableError: no device can serve, or the device died and no other could retry.
            PreconditionError: the scheduler is shut down.
            ModelRuntimeError, DeviceIOError: the invocation itself failed.
        """
        if self._closed:
            raise PreconditionError("the daemon is shutting down")
        self._loop = asyncio.get_running_loop()
        accepted = time.monotonic()
        self._check_deadline(deadline, accepted)
        while True:
            device = self._restarting_holder(model_key) or await self._choose(model_key, set(), deadline)
            if len(self._queues[device]) < self._queue_depth:
                break
            if not wait_for_room:
                raise ResourceExhaustedError(
                    f"the queue of device {device} is full ({self._queue_depth} requests waiting); retry later")
            await self._room_on(device, deadline)  # then choose again: the device may have gone meanwhile
        req = _Request(model_key, list(inputs), deadline, self._loop.create_future(), accepted)
        self._enqueue(req, device)
        try:
            return await req.future
        except asyncio.CancelledError:
            self._drop(req)
            raise

    async def _room_on(self, device: str, deadline: Optional[float]) -> None:
        """Wait until ``device``'s queue may have room (or the device left, or the scheduler closed).

        Raises:
            DeadlineExceededError: the deadline passed first. PreconditionError: the scheduler closed.
        """
        assert self._loop is not None
        room: "asyncio.Future[None]" = self._loop.create_future()
        self._room_waiters.setdefault(device, deque()).append(room)
        timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
        try:
            await asyncio.wait_for(room, timeout)
        except asyncio.TimeoutError:
            raise DeadlineExceededError(f"the deadline passed while the request waited for room in the queue "
                                        f"of device {device}; it was not run") from None
        if self._closed:
            raise PreconditionError("the daemon is shutting down")

    def _wake_room(self, device: str, everyone: bool = False) -> None:
        """Let as many room waiters try again as ``device``'s queue has room for (all of them with ``everyone``)."""
        waiters = self._room_waiters.get(device)
        if not waiters:
            return
        room = len(waiters) if everyone else self._queue_depth - len(self._queues.get(device, ()))
        while waiters and room > 0:
            waiter = waiters.popleft()
            if not waiter.done():  # a waiter whose caller gave up is skipped
                waiter.set_result(None)
                room -= 1

    @staticmethod
    def _check_deadline(deadline: Optional[float], now: float) -> None:
        if deadline is not None and now >= deadline:
            raise DeadlineExceededError("the deadline passed before a device could run the request")

    def _restarting_holder(self, model_key: str) -> Optional[str]:
        """With no usable device, a restarting one that holds the model: the request waits for it."""
        if self._usable:
            return None
        holders = [d for d in sorted(self._restarting) if d in self._holders.get(model_key, ())]
        return min(holders, key=self.load_of) if holders else None

    async def _choose(self, model_key: str, excluded: Set[str], deadline: Optional[float]) -> str:
        """A holder of the model if any (least loaded), else the least loaded device, loading the model there.

        Raises:
            DeviceUnavailableError: no usable device.
        """
        usable = sorted(self._usable - excluded)
        if not usable:
            raise DeviceUnavailableError("no Edge TPU device is available to serve the request")
        holders = [d for d in usable if d in self._holders.get(model_key, ())]
        if holders:
            return min(holders, key=self.load_of)
        device = min(usable, key=self.load_of)
        await self._ensure_loaded(device, model_key, deadline)
        return device

    async def _ensure_loaded(self, device: str, model_key: str, deadline: Optional[float]) -> None:
        if self._loader is None:
            raise DeviceUnavailableError(f"model {model_key} is not loaded on any available device")
        key = (device, model_key)
        pending = self._loading.get(key)
        if pending is None:
            log.info("loading %s on %s on demand", model_key, device)
            pending = asyncio.ensure_future(self._loader(device, model_key))
            self._loading[key] = pending

            def done(fut: "asyncio.Future[None]", key: Tuple[str, str] = key) -> None:
                self._loading.pop(key, None)
                if not fut.cancelled() and fut.exception() is None:
                    self.placed(key[1], key[0])

            pending.add_done_callback(done)
        timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
        try:
            await asyncio.wait_for(asyncio.shield(pending), timeout)
        except asyncio.TimeoutError:
            raise DeadlineExceededError(
                f"the deadline passed while {model_key} was being loaded on {device}") from None

    def _enqueue(self, req: _Request, device: str, front: bool = False) -> None:
        req.queued_on = device
        if front:
            self._queues[device].appendleft(req)
        else:
            self._queues[device].append(req)
        self._dispatch(device)
        if req.queued_on is not None and req.deadline is not None and req.timer is None:
            # still waiting for the device: expire it in the queue just before its deadline passes
            assert self._loop is not None
            req.timer = self._loop.call_later(max(0.0, _answer_by(req) - time.monotonic()), self._expire, req)

    def _expire(self, req: _Request) -> None:
        req.timer = None
        if req.queued_on is not None and not req.future.done():
            device = req.queued_on
            self._remove(req)
            req.future.set_exception(DeadlineExceededError(
                f"the deadline passed while the request waited in the queue of device {device}; it was not run"
                f"{self._hang_advice()}"))

    def _overdue(self, req: _Request, device: str) -> None:
        """A running request's deadline is about to pass: answer with the reason while the caller still listens."""
        req.timer = None
        if not req.future.done():
            req.future.set_exception(DeadlineExceededError(
                f"device {device} did not answer within {time.monotonic() - req.started:.1f} s, and the call's "
                f"deadline is about to pass{self._hang_advice()}"))

    def _hang_advice(self) -> str:
        if self._invoke_timeout_s is None:
            return ""
        return (f". A device that does not answer within invoke_timeout_s ({self._invoke_timeout_s:g} s) is taken "
                f"for hung and its worker restarted: retry in a moment, or give calls a longer deadline than that "
                f"(edgetpuctl --timeout, Client(timeout=...)) to be told so")

    def _remove(self, req: _Request) -> None:
        device, req.queued_on = req.queued_on, None
        if device is not None:
            try:
                self._queues[device].remove(req)
            except ValueError:
                pass
            self._wake_room(device)

    def _drop(self, req: _Request) -> None:
        """The caller gave up: a queued request leaves its queue; a running one is left to finish unseen."""
        if req.timer is not None:
            req.timer.cancel()
            req.timer = None
        if req.queued_on is not None:
            log.debug("dropping cancelled request for %s queued on %s", req.model_key, req.queued_on)
            self._remove(req)

    def _dispatch(self, device: str) -> None:
        """Hand queued requests to ``device`` while it has capacity."""
        queue = self._queues.get(device)
        if not queue or device not in self._usable:
            return
        self._dispatching = True
        try:
            self._hand_over(device, queue)
        finally:
            self._dispatching = False
        self._wake_room(device)

    def _hand_over(self, device: str, queue: Deque[_Request]) -> None:
        """Submit from the front of ``queue`` while the device has room."""
        while queue and self._pool.capacity(device) > 0:
            req = queue.popleft()
            req.queued_on = None
            if req.future.done():
                continue
            if req.timer is not None:
                req.timer.cancel()
                req.timer = None
            now = time.monotonic()
            if req.deadline is not None and now >= req.deadline:
                req.future.set_exception(DeadlineExceededError(
                    "the deadline passed while the request waited in the queue; it was not run"))
                continue
            req.started = now
            try:
                cf = self._pool.submit(device, req.model_key, req.inputs)
            except Exception as exc:  # the pool refused at once (device gone, model missing)
                self._failed(req, device, exc)
                continue
            self._inflight[device] = self._inflight.get(device, 0) + 1
            if req.deadline is not None:
                assert self._loop is not None
                req.timer = self._loop.call_later(max(0.0, _answer_by(req) - now), self._overdue, req, device)
            cf.add_done_callback(self._callback(req, device))

    def _callback(self, req: _Request, device: str) -> Callable[["concurrent.futures.Future"], None]:
        loop = self._loop
        assert loop is not None
        loop_thread = threading.get_ident()  # _dispatch runs on the loop

        def on_done(cf: "concurrent.futures.Future") -> None:
            finished = time.monotonic()
            if threading.get_ident() == loop_thread:  # the pool reads replies on the loop: no wake-up needed
                if self._dispatching:  # failed at once, inside _dispatch: finish after it, not inside it
                    loop.call_soon(self._finished, req, device, cf, finished)
                else:
                    self._finished(req, device, cf, finished)
                return
            try:
                loop.call_soon_threadsafe(self._finished, req, device, cf, finished)
            except RuntimeError:  # the loop is closed: nobody is waiting any more
                pass

        return on_done

    def _finished(self, req: _Request, device: str, cf: "concurrent.futures.Future", finished: float) -> None:
        self._inflight[device] = max(0, self._inflight.get(device, 0) - 1)
        if req.timer is not None:
            req.timer.cancel()
            req.timer = None
        try:
            if cf.cancelled():
                self._failed(req, device, DeviceUnavailableError(f"device {device} dropped the request"))
            elif cf.exception() is not None:
                self._failed(req, device, cf.exception())  # type: ignore[arg-type]
            elif not req.future.done():
                # the worker's own invoke time when the pool reports it, else the round trip
                invoke_s = getattr(cf, "invoke_s", None)
                req.future.set_result(InvokeResult(
                    outputs=cf.result(), device=device, queue_s=req.started - req.accepted,
                    invoke_s=float(invoke_s) if invoke_s is not None else finished - req.started,
                    round_trip_s=finished - req.started))
        finally:
            self._dispatch(device)

    def _failed(self, req: _Request, device: str, exc: BaseException) -> None:
        if req.future.done():
            return
        if isinstance(exc, DeviceUnavailableError) and not self._closed:
            req.attempts += 1
            req.excluded.add(device)
            if req.attempts < self._max_attempts and (self._usable | self._restarting) - req.excluded:
                log.warning("retrying a request for %s elsewhere: %s", req.model_key, exc)
                self._spawn(self._requeue(req, original=exc))
                return
        req.future.set_exception(exc)

    async def _requeue(self, req: _Request, original: Optional[BaseException] = None) -> None:
        """Put an accepted request at the front of another device's queue (it is never dropped for space).

        With no other usable device, a request that had not started waits for a restarting
        device (even its own); one that was running (``original`` set) only for another one.
        """
        if req.future.done():
            return
        try:
            self._check_deadline(req.deadline, time.monotonic())
            if not (self._usable - req.excluded):
                waiting = sorted(self._restarting - (req.excluded if original is not None else set()))
                if waiting:
                    holders = [d for d in waiting if d in self._holders.get(req.model_key, ())]
                    device = (holders or waiting)[0]
                    log.info("a request for %s waits for %s to restart", req.model_key, device)
                    self._enqueue(req, device, front=True)
                    return
            device = await self._choose(req.model_key, req.excluded, req.deadline)
        except (DeadlineExceededError, DeviceUnavailableError) as exc:
            if not req.future.done():
                if isinstance(exc, DeviceUnavailableError) and original is not None:
                    exc = DeviceUnavailableError(f"{original} (no other device could retry it)")
                req.future.set_exception(exc)
            return
        except Exception as exc:  # loading elsewhere failed
            if not req.future.done():
                req.future.set_exception(exc)
            return
        if not req.future.done():
            self._enqueue(req, device, front=True)

    def _spawn(self, coro: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coro)
        task.add_done_callback(lambda t: t.cancelled() or t.exception())

    def close(self) -> None:
        """Refuse new requests and fail the queued ones and those waiting for room (in-flight ones finish)."""
        self._closed = True
        for device in list(self._room_waiters):
            self._wake_room(device, everyone=True)
        for device, queue in self._queues.items():
            while queue:
                req = queue.popleft()
                req.queued_on = None
                if req.timer is not None:
                    req.timer.cancel()
                if not req.future.done():
                    req.future.set_exception(PreconditionError("the daemon is shutting down"))
