"""The main process's end of one device worker: spawn, slots, in-flight table, reply reading.

Replies are read either by a dedicated reader thread in the main process or, when
the pool is given an asyncio loop (the daemon does), by that loop through
``add_reader``, which saves the thread's wake-up and its hop back to the loop on
every inference; either sees the pipe close the moment the child dies (SIGKILL,
SIGABRT), and the death itself is handled on a thread.

Latency: the code path costs a few tens of µs (one 150 KB copy each way at
most, 9-byte messages). What dominates a lone request is the operating system
waking sleeping threads (worker, then reader, then the caller; with the loop
reading, worker then loop); on a loaded 2-vCPU virtual machine that is 60-190 µs
per wake-up. Busy-waiting near the expected completion was tried and measured
worse there (it steals the CPU the worker needs), so both ends block. Under load
the scheduler keeps >= 2 requests in flight per device, the worker finds the next
request already queued, and the transport overlaps the invocation (see
scripts/bench/bench_worker.py).
"""
from __future__ import annotations

import asyncio
import collections
import enum
import itertools
import logging
import multiprocessing
import os
import pickle
import signal
import threading
import time
from concurrent.futures import Future, InvalidStateError
from dataclasses import dataclass
from multiprocessing import shared_memory
from typing import Any, Callable, Deque, Dict, List, Optional, Protocol, Sequence, Tuple

import numpy as np

from . import errors as hal_errors
from .backend import WorkerConfig
from .child import worker_main
from .errors import DeviceInitError, DeviceUnavailableError, HalError, ModelRuntimeError
from .executor import TensorSpec, check_inputs
from .spare import SpareWorker
from .wire import INVOKE, OP_CTRL, OP_INVOKE, R_CTRL, R_ERR, REPLY, Slots, rebuild_error

log = logging.getLogger(__name__)


def fail_future(future: Future, error: BaseException) -> None:
    """Fail ``future`` unless its owner already cancelled it while it waited in a queue.

    A request is marked running when it is sent to the worker, so only queued ones
    can be cancelled; every path that fails queued requests (unload, worker death,
    restart) goes through here rather than calling ``set_exception`` on a future
    that may be cancelled, which would raise on the reader or life-cycle thread.
    """
    try:
        future.set_exception(error)
    except InvalidStateError:
        pass




class WorkerLife(enum.Enum):
    """Where a handle is in its one life; only forward moves.

    NEW: not started, or starting. SERVING: the worker answers. STOPPING: told to
    stop, still draining. DEAD: its end was handled (every waiter failed), or it
    was stopped without ever serving.
    """

    NEW = "new"
    SERVING = "serving"
    STOPPING = "stopping"
    DEAD = "dead"

    @property
    def alive(self) -> bool:
        return self in (WorkerLife.SERVING, WorkerLife.STOPPING)


@dataclass
class _Request:
    future: Future
    model_key: str
    inputs: Optional[Sequence[np.ndarray]]
    slot: int = -1
    started: float = 0.0
    model: Optional["_ParentModel"] = None  # set when sent: its slots outlive an unload until the reply


class _ParentModel(Slots):
    """The main process's record of one loaded model: its slots (owned here) and which are free."""

    def __init__(self, key: str, model_id: int, inputs: Sequence[TensorSpec], outputs: Sequence[TensorSpec]) -> None:
        super().__init__(inputs, outputs)
        self.key = key
        self.model_id = model_id
        self.free: List[int] = []

    def release(self) -> None:
        self.close_slots(unlink=True)


DeathCallback = Callable[["WorkerHandle", Optional[int], List[_Request]], None]


class ReplyLoop(Protocol):
    """The part of an asyncio event loop a handle needs to have its replies read there."""

    def add_reader(self, fd: int, callback: Callable[[], None]) -> None: ...

    def remove_reader(self, fd: int) -> bool: ...

    def call_soon_threadsafe(self, callback: Callable[..., Any], *args: Any) -> Any: ...

    def is_closed(self) -> bool: ...


class WorkerHandle:
    """The main process's end of one worker: spawn, slots, in-flight table, reply reading.

    Replies are read by a reader thread, or by ``reply_loop`` (an asyncio loop) when
    one is given: futures then resolve on the loop's thread, and callers must not
    wait on the handle (``control``, ``stop``) from that thread.

    ``on_death(handle, exitcode, queued)`` runs on the reader thread (with a loop,
    on a thread started for it) after the worker died: dispatched requests have
    already failed with ``DeviceUnavailableError``; ``queued`` are the ones never
    sent, for the supervisor to re-queue on the next worker.
    """

    def __init__(self, config: WorkerConfig, on_death: Optional[DeathCallback] = None, slots: int = 4,
                 reply_loop: Optional[ReplyLoop] = None) -> None:
        self.config = config
        self.slots = max(2, int(slots))
        self._on_death = on_death
        self._reply_loop = reply_loop
        self._death_handled = threading.Event()
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._model_ids = itertools.count(1)
        self._models: Dict[str, _ParentModel] = {}
        self._inflight: Dict[int, _Request] = {}
        self._control: Dict[int, Future] = {}
        self._queue: Deque[_Request] = collections.deque()
        self._conn: Any = None
        self._process: Optional[multiprocessing.process.BaseProcess] = None
        self._reader: Optional[threading.Thread] = None
        self._life = WorkerLife.NEW
        self.death_reason: Optional[str] = None
        self.exitcode: Optional[int] = None
        self._pid: Optional[int] = None
        self._stop_reason: Optional[str] = None
        self._death_error: Optional[str] = None
        self._death_thread: Optional[threading.Thread] = None
        self._reply_fd = -1

    # -- life cycle -------------------------------------------------------
    @property
    def pid(self) -> Optional[int]:
        return self._pid

    @property
    def alive(self) -> bool:
        return self._life.alive

    @property
    def life(self) -> WorkerLife:
        return self._life

    def start(self, timeout_s: float = 60.0, spare: Optional["SpareWorker"] = None) -> None:
        """Spawn the worker (or take over ``spare``) and wait until it has opened its device.

        Raises:
            RuntimeMissingError / DelegateLoadError / DeviceInitError: the worker could not open the device.
        """
        name = f"edgetpud-worker-{self.config.device_id}"
        taken = spare.take() if spare is not None else None
        if taken is not None:
            process, parent_conn = taken
            try:
                parent_conn.send_bytes(pickle.dumps(self.config))
            except (OSError, ValueError):
                taken = None
                parent_conn.close()
                process.kill()
                process.join(5.0)
        if taken is None:
            ctx = multiprocessing.get_context("spawn")
            parent_conn, child_conn = ctx.Pipe(duplex=True)
            process = ctx.Process(target=worker_main, args=(child_conn, self.config), name=name, daemon=True)
            process.start()
            child_conn.close()  # the child holds the only other end: its death closes the pipe
        self._process, self._conn, self._pid = process, parent_conn, process.pid
        try:
            if not parent_conn.poll(timeout_s):
                raise DeviceInitError(f"worker for {self.config.device_id} did not start within {timeout_s:.0f} s")
            raw = parent_conn.recv_bytes()
            _, reply = pickle.loads(raw[1:])
        except (EOFError, OSError) as exc:
            self._reap()
            raise DeviceInitError(f"worker for {self.config.device_id} died while starting "
                                  f"(exit code {self.exitcode})") from exc
        except BaseException:
            self._reap(kill=True)
            raise
        if reply[0] == "error":
            self._reap()
            raise rebuild_error(reply[1], reply[2])
        self._life = WorkerLife.SERVING
        if self._reply_loop is None:
            self._reader = threading.Thread(target=self._read_loop, name=f"{name}-reader", daemon=True)
            self._reader.start()
        else:
            try:
                self._reply_loop.call_soon_threadsafe(self._watch_replies)
            except RuntimeError as exc:  # the loop is closed: nobody would read the replies
                self._reap(kill=True)
                self._life = WorkerLife.NEW
                raise DeviceInitError(f"worker for {self.config.device_id}: its event loop is closed") from exc
        log.debug("worker for %s started, pid %s", self.config.device_id, process.pid)

    def _reap(self, kill: bool = False) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        if kill and process.is_alive():
            process.kill()
        process.join(2.0)
        if process.is_alive():  # did not exit after its pipe closed: stuck
            process.kill()
            process.join(5.0)
        self.exitcode = process.exitcode
        try:
            process.close()
        except ValueError:  # pragma: no cover
            pass
        if self._conn is not None:
            self._conn.close()

    def stop(self, timeout_s: float = 5.0, reason: Optional[str] = None) -> None:
        """Ask the worker to exit, kill it if it does not, and free the shared memory.

        Requests still pending fail with ``DeviceUnavailableError`` saying ``reason``.
        """
        with self._lock:
            if self._life is WorkerLife.SERVING:
                self._life = WorkerLife.STOPPING
            self._stop_reason = reason
            life = self._life
            alive = life.alive
        if alive:
            try:
                self.control("stop", timeout_s=timeout_s)
            except HalError:
                self.kill()
        if life is WorkerLife.NEW:  # never started, or failed while starting
            self._reap(kill=True)
            self._life = WorkerLife.DEAD
        elif self._reply_loop is not None and self._reply_loop.is_closed():
            self.kill()  # nobody reads the pipe any more: handle the death here
            self._handle_death()
        elif threading.current_thread() is not self._death_thread:
            if not self._death_handled.wait(timeout_s):
                self.kill()
                self._death_handled.wait(timeout_s)
        self._release_models()

    def kill(self, sig: int = signal.SIGKILL, reason: Optional[str] = None, error: Optional[str] = None) -> None:
        """Signal the worker (tests, and the supervisor's hang watchdog); the reader notices.

        ``reason`` is what the log says of the death; ``error``, when given, is what the
        requests in flight fail with instead of "the worker died (reason)": the caller of a
        hung invocation should learn what happened and what to do.
        """
        if reason:
            self.death_reason = reason
        if error:
            self._death_error = error
        if self._life.alive and self._pid is not None:
            try:
                os.kill(self._pid, sig)
            except ProcessLookupError:
                pass

    def _release_models(self) -> None:
        with self._lock:
            models = list(self._models.values())
            self._models.clear()
        for model in models:
            model.release()

    # -- control ----------------------------------------------------------
    def control(self, verb: str, *args: Any, timeout_s: float = 120.0) -> Any:
        """Run one command in the worker and wait for its answer.

        Raises:
            DeviceUnavailableError: the worker is dead or died meanwhile.
            HalError subclasses: what the worker raised.
        """
        self._check_not_on_reply_loop(verb)
        future: Future = Future()
        with self._lock:
            if not self._life.alive:
                raise DeviceUnavailableError(f"worker for {self.config.device_id} is not running")
            req_id = next(self._ids) & 0xFFFFFFFF
            self._control[req_id] = future
            try:
                self._conn.send_bytes(bytes([OP_CTRL]) + pickle.dumps((req_id, verb) + tuple(args)))
            except (OSError, ValueError) as exc:
                self._control.pop(req_id, None)
                raise DeviceUnavailableError(f"worker for {self.config.device_id} is gone: {exc}") from exc
        try:
            return future.result(timeout_s)
        except TimeoutError as exc:
            raise hal_errors.DeviceTimeoutError(
                f"worker for {self.config.device_id} did not answer {verb!r} within {timeout_s:.0f} s") from exc

    def _check_not_on_reply_loop(self, verb: str) -> None:
        """Waiting for a reply on the thread that reads replies would wait forever."""
        loop = self._reply_loop
        if loop is None:
            return
        if loop.is_closed():
            raise DeviceUnavailableError(f"worker for {self.config.device_id}: the event loop reading its replies is closed")
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            return
        if running is loop:
            raise RuntimeError(f"WorkerHandle.{verb} waits for a reply the event loop reads: "
                               "call it from another thread (run_in_executor)")

    def load(self, model_key: str, model_path: str, cpu_twin_path: Optional[str]) -> Tuple[List[TensorSpec], List[TensorSpec]]:
        """Open the model in the worker and give it its shared-memory slots.

        Raises:
            ModelRuntimeError: the runtime rejected the model.
            DeviceUnavailableError: the worker died.
        """
        if model_key in self._models:
            self.unload(model_key)
        model_id = next(self._model_ids) & 0xFFFF
        inputs, outputs = self.control("load", model_id, str(model_path),
                                       str(cpu_twin_path) if cpu_twin_path else None)
        model = _ParentModel(model_key, model_id, inputs, outputs)
        try:
            for _ in range(self.slots):
                model.add(shared_memory.SharedMemory(create=True, size=model.size))
            model.free = list(range(self.slots))[::-1]
            self.control("attach", model_id, [s.name for s in model.shms])
            model.unlink_names()  # both processes have them mapped: nothing else needs the names
        except BaseException:
            model.release()
            try:
                self.control("unload", model_id)
            except HalError:
                pass
            raise
        with self._lock:
            self._models[model_key] = model
        return list(model.inputs), list(model.outputs)

    def unload(self, model_key: str) -> None:
        """Close the model in the worker; requests already sent finish first (the pipe is in order)."""
        with self._lock:
            model = self._models.pop(model_key, None)
            waiting = [r for r in self._queue if r.model_key == model_key]
            for r in waiting:
                self._queue.remove(r)
        for r in waiting:
            fail_future(r.future, ModelRuntimeError(f"model {model_key} was unloaded from {self.config.device_id}"))
        if model is None:
            return
        try:
            self.control("unload", model.model_id)
        except DeviceUnavailableError:
            pass
        model.release()

    def models(self) -> List[str]:
        with self._lock:
            return list(self._models)

    # -- invocations ------------------------------------------------------
    def capacity(self) -> int:
        with self._lock:
            if not self._life.alive:
                return 0
            return max(0, self.slots - len(self._inflight) - len(self._queue))

    def inflight(self) -> int:
        with self._lock:
            return len(self._inflight) + len(self._queue)

    def oldest_started(self) -> Optional[float]:
        """``time.monotonic()`` of the oldest request the worker holds (the hang watchdog reads it)."""
        with self._lock:
            starts = [r.started for r in self._inflight.values()]
        return min(starts) if starts else None

    def submit(self, model_key: str, inputs: Sequence[np.ndarray], future: Optional[Future] = None) -> Future:
        """Queue one invocation; the returned future resolves on the reader thread."""
        future = future if future is not None else Future()
        if not self._life.alive:
            fail_future(future, DeviceUnavailableError(f"worker for {self.config.device_id} is not running"))
            return future
        model = self._models.get(model_key)
        if model is None:
            fail_future(future, ModelRuntimeError(f"model {model_key} is not loaded on {self.config.device_id}"))
            return future
        try:
            check_inputs(model.inputs, inputs)
        except ModelRuntimeError as exc:
            fail_future(future, exc)
            return future
        request = _Request(future, model_key, inputs)
        orphans: List[_Request] = []
        with self._lock:
            if not self._life.alive:
                error: Optional[HalError] = DeviceUnavailableError(f"worker for {self.config.device_id} is not running")
            else:
                error = None
                self._queue.append(request)
                orphans = self._pump()
        if error is not None:
            fail_future(future, error)
        self._fail_orphans(orphans)
        return future

    def adopt(self, requests: Sequence[_Request]) -> None:
        """Take over requests a dead worker never started (same futures)."""
        for r in requests:
            if r.inputs is not None and not r.future.done():
                self.submit(r.model_key, r.inputs, future=r.future)

    def _pump(self) -> List[_Request]:
        """Send queued requests while slots are free. Caller holds the lock.

        Returns requests whose model went away, for the caller to fail after
        releasing the lock (future callbacks must never run under it).
        """
        orphans: List[_Request] = []
        while self._queue and len(self._inflight) < self.slots:
            request = self._queue.popleft()
            model = self._models.get(request.model_key)
            if model is None or not model.free:
                orphans.append(request)
                continue
            if not request.future.set_running_or_notify_cancel():
                continue
            slot = model.free.pop()
            for view, array in zip(model.in_views[slot], request.inputs or ()):
                np.copyto(view, array, casting="no")
            req_id = next(self._ids) & 0xFFFFFFFF
            request.slot, request.inputs, request.started = slot, None, time.monotonic()
            request.model = model
            self._inflight[req_id] = request
            try:
                self._conn.send_bytes(INVOKE.pack(OP_INVOKE, req_id, model.model_id, slot))
            except (OSError, ValueError):
                break  # the reader sees the pipe close and fails everything in flight
        return orphans

    @staticmethod
    def _fail_orphans(orphans: List[_Request]) -> None:
        for r in orphans:
            fail_future(r.future, ModelRuntimeError(f"model {r.model_key} is not loaded"))

    def _read_loop(self) -> None:
        """The reader thread: one reply after another until the pipe closes."""
        self._death_thread = threading.current_thread()
        conn = self._conn
        while True:
            try:
                msg = conn.recv_bytes()
            except (EOFError, OSError, ValueError):
                break
            self._on_reply(msg)
        self._handle_death()

    def _watch_replies(self) -> None:
        """On the reply loop: read the pipe whenever it is readable."""
        if self._life is WorkerLife.DEAD or self._conn is None or self._conn.closed:
            return
        self._reply_fd = self._conn.fileno()
        self._reply_loop.add_reader(self._reply_fd, self._on_readable)  # type: ignore[union-attr]

    def _on_readable(self) -> None:
        """On the reply loop: take one reply (the loop calls again while more are waiting)."""
        try:
            msg = self._conn.recv_bytes()
        except (EOFError, OSError, ValueError):
            self._reply_loop.remove_reader(self._reply_fd)  # type: ignore[union-attr]
            # Reaping and the supervisor's restart block: never on the loop.
            self._death_thread = threading.Thread(target=self._handle_death, daemon=True,
                                                  name=f"edgetpud-worker-{self.config.device_id}-death")
            self._death_thread.start()
            return
        self._on_reply(msg)

    def _on_reply(self, msg: bytes) -> None:
        """Resolve the future a reply answers, and send what waited for its slot."""
        op = msg[0]
        if op == R_CTRL:
            req_id, result = pickle.loads(msg[1:])
            with self._lock:
                future = self._control.pop(req_id, None)
            if future is not None:
                future.set_result(result)
            return
        _, req_id, invoke_ns = REPLY.unpack_from(msg)
        error = rebuild_error(*pickle.loads(msg[REPLY.size:])) if op == R_ERR else None
        outputs: Optional[List[np.ndarray]] = None
        with self._lock:
            request = self._inflight.pop(req_id, None)
            if request is None:
                control = self._control.pop(req_id, None)
                if control is not None and error is not None:
                    control.set_exception(error)
                return
            model = request.model
            if model is not None and model.shms:
                if error is None:
                    outputs = [np.array(v, copy=True) for v in model.out_views[request.slot]]
                model.free.append(request.slot)
            orphans = self._pump()
        self._fail_orphans(orphans)
        request.future.invoke_s = invoke_ns / 1e9  # type: ignore[attr-defined]
        if error is not None:
            request.future.set_exception(error)
        elif outputs is None:
            request.future.set_exception(ModelRuntimeError(f"model {request.model_key} was unloaded"))
        else:
            request.future.set_result(outputs)

    def _handle_death(self) -> None:
        try:
            self._fail_everything()
        finally:
            self._death_handled.set()

    def _fail_everything(self) -> None:
        with self._lock:
            previous = self._life
            if previous is WorkerLife.DEAD:
                return
            self._life = WorkerLife.DEAD
            was_alive = previous.alive
            inflight = list(self._inflight.values())
            controls = list(self._control.values())
            queued = list(self._queue)
            self._inflight.clear()
            self._control.clear()
            self._queue.clear()
            stopping = previous is WorkerLife.STOPPING
        self._reap()
        code = self.exitcode
        if self.death_reason is None:
            if code is not None and code < 0:
                try:
                    self.death_reason = f"killed by {signal.Signals(-code).name}"
                except ValueError:
                    self.death_reason = f"killed by signal {-code}"
            else:
                self.death_reason = f"exited with code {code}"
        device = self.config.device_id
        error = DeviceUnavailableError(
            (self._stop_reason or f"{device} stopped") if stopping
            else self._death_error or f"the worker for {device} died ({self.death_reason})")
        for r in inflight:
            fail_future(r.future, error)
        for f in controls:
            fail_future(f, error)
        self._release_models()
        if stopping or not was_alive:
            for r in queued:
                fail_future(r.future, error)
            return
        log.error("worker for %s (pid %s) died: %s; %d request(s) in flight failed, %d queued kept",
                  device, self.pid, self.death_reason, len(inflight), len(queued))
        if self._on_death is not None:
            try:
                self._on_death(self, code, queued)
            except Exception:  # pragma: no cover - never let the reader die silently
                log.exception("on_death callback failed for %s", device)
        else:
            for r in queued:
                fail_future(r.future, error)
