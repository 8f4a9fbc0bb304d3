"""The ZMQ side: ``ipc://`` endpoints on the daemon's asyncio loop, one task per request.

Frigate's REQ socket waits ``request_timeout_ms`` (200 ms) for an answer, then closes
and reconnects. A REP socket would be wedged by that: it must answer every request
before it reads the next, in order, one at a time. So each endpoint is a ROUTER
socket instead: it reads every request as it comes (with the client's routing id),
runs each as its own task, and sends each answer to the connection it came from
when it is ready. A late answer to a connection Frigate has closed is dropped by
ZMQ (ROUTER drops messages to unknown peers), and the next request, on the new
connection, was already being served meanwhile. Several Frigate instances can share
one endpoint, and their requests run concurrently through the scheduler.

The socket is a plain (blocking-API) pyzmq socket read from the daemon's own loop
through ``add_reader`` on its notification descriptor, with non-blocking calls and
no thread: a request costs one wake-up of the loop that already runs the scheduler
and the gRPC server, and none of the future machinery of ``zmq.asyncio`` (which
cost a third of the endpoint's own time per request). ZMQ's descriptor only says
that something changed, once: the socket is drained after every wake-up, and
checked again after every send, since a send can take in the news of a request
without the descriptor signalling it again.
"""
from __future__ import annotations

import asyncio
import logging
import os
import shutil
import socket
import stat
from pathlib import Path
from typing import Any, List, Optional, Sequence, Set

from ..errors import EdgetpudError, PreconditionError
from .handler import FrigateHandler
from . import protocol

log = logging.getLogger(__name__)

IPC_PREFIX = "ipc://"
#: Requests taken per wake-up before the loop runs its other work (gRPC, replies from devices).
DRAIN_BATCH = 32


class FrigateUnavailableError(EdgetpudError):
    """--zmq-listen was given but pyzmq is not installed."""


def import_zmq() -> Any:
    """pyzmq.

    Raises:
        FrigateUnavailableError: pyzmq is missing (an optional extra).
    """
    try:
        import zmq
    except ImportError:
        raise FrigateUnavailableError(
            "zmq_listen (--zmq-listen) needs pyzmq, which is not installed: "
            "pip install 'edgetpud[frigate]' (or pip install pyzmq)") from None
    return zmq


class FrigateEndpoint:
    """One ROUTER socket bound to ``ipc://PATH``, answering Frigate's zmq detector."""

    def __init__(self, address: str, handler: FrigateHandler, context: Any, max_message_bytes: int,
                 max_in_flight: int, socket_mode: int = 0o660, socket_group: Optional[str] = None) -> None:
        self.address = address
        self.path = Path(address[len(IPC_PREFIX):])
        self._handler = handler
        self._context = context
        self._max_message_bytes = max_message_bytes
        self._max_in_flight = max_in_flight
        self._mode = socket_mode
        self._group = socket_group
        self._socket: Any = None
        self._zmq: Any = None
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._fd: Optional[int] = None
        self._drain_pending = False
        self._tasks: Set["asyncio.Task[None]"] = set()

    def start(self) -> None:
        """Bind (replacing a stale socket file) and start reading requests.

        Raises:
            PreconditionError: the path is taken by a file or a live server, or cannot be made.
        """
        zmq = import_zmq()
        _prepare_socket_path(self.path)
        sock = self._context.socket(zmq.ROUTER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.MAXMSGSIZE, self._max_message_bytes)
        try:
            sock.bind(self.address)
        except zmq.ZMQError as exc:
            sock.close(0)
            raise PreconditionError(f"cannot listen on {self.address}: {exc}") from None
        try:
            os.chmod(self.path, self._mode)
            if self._group:
                shutil.chown(self.path, group=self._group)
        except (OSError, LookupError) as exc:
            sock.close(0)
            raise PreconditionError(f"cannot set mode/group of {self.path}: {exc}") from None
        self._socket, self._zmq = sock, zmq
        self._loop = asyncio.get_running_loop()
        self._fd = sock.getsockopt(zmq.FD)
        self._loop.add_reader(self._fd, self._drain)
        self._drain_soon()  # requests may have queued between bind and add_reader
        log.info("frigate zmq detector listening on %s (mode %o)", self.address, self._mode)

    def close_now(self) -> None:
        """Close at once (a start that failed on another endpoint)."""
        self._stop_reading()
        if self._socket is not None:
            self._socket.close(0)
            self._socket = None
        try:
            self.path.unlink()
        except OSError:
            pass

    async def stop(self, grace_s: float) -> None:
        """Stop reading, let the requests being served finish within ``grace_s``, then close."""
        self._stop_reading()
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=max(0.0, grace_s))
        for task in list(self._tasks):
            task.cancel()
        if self._socket is not None:
            self._socket.close(0)
            self._socket = None
        try:
            self.path.unlink()
        except OSError:
            pass

    def _stop_reading(self) -> None:
        if self._fd is not None and self._loop is not None and not self._loop.is_closed():
            self._loop.remove_reader(self._fd)
        self._fd = None

    def _drain_soon(self) -> None:
        if not self._drain_pending and self._loop is not None:
            self._drain_pending = True
            self._loop.call_soon(self._drain)

    def _drain(self) -> None:
        """Take every request waiting on the socket (the loop calls this when the descriptor signals)."""
        self._drain_pending = False
        zmq = self._zmq
        for _ in range(DRAIN_BATCH):
            if self._fd is None or self._socket is None:
                return
            try:
                frames = self._socket.recv_multipart(flags=zmq.NOBLOCK, copy=False)
            except zmq.Again:
                return
            except zmq.ZMQError as exc:
                log.warning("frigate: receiving on %s failed: %s", self.address, exc)
                return
            self._take(frames)
        self._drain_soon()  # more may be waiting: let the rest of the loop run first

    def _take(self, frames: Sequence[Any]) -> None:
        envelope, body = _split_envelope(frames)
        if envelope is None:
            return  # not from a REQ socket: no one to answer
        if len(self._tasks) >= self._max_in_flight:
            self._send(envelope, protocol.error_detections(
                f"busy: {self._max_in_flight} requests in flight on {self.address}"))
            return
        task = asyncio.ensure_future(self._answer(envelope, body))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _answer(self, envelope: List[bytes], body: Sequence[Any]) -> None:
        reply = await self._handler.handle(envelope[0], body)
        self._send(envelope, reply)

    def _send(self, envelope: List[bytes], reply: List[bytes]) -> None:
        """Queue the answer; ZMQ drops it if the connection is gone (Frigate timed out and reconnected)."""
        if self._socket is None:
            return
        zmq = self._zmq
        try:
            self._socket.send_multipart(envelope + reply, flags=zmq.NOBLOCK, copy=False)
        except zmq.ZMQError as exc:
            log.debug("frigate: an answer on %s was dropped: %s", self.address, exc)
        try:
            if self._socket.getsockopt(zmq.EVENTS) & zmq.POLLIN:
                self._drain_soon()
        except zmq.ZMQError:
            pass


def _split_envelope(frames: Sequence[Any]) -> "tuple[Optional[List[bytes]], List[Any]]":
    """``[routing id, b"", request frames...]`` -> (``[id, b""]``, request frames as buffers)."""
    if len(frames) < 2 or len(frames[1].bytes) != 0:
        return None, []
    body = [frame.buffer for frame in frames[2:]]
    return [frames[0].bytes, b""], body


def _prepare_socket_path(path: Path) -> None:
    """Remove a stale socket file; refuse a live one or a file that is not a socket.

    Raises:
        PreconditionError: the path is in use or not a socket.
    """
    try:
        mode = path.lstat().st_mode
    except FileNotFoundError:
        mode = None
    except OSError as exc:
        raise PreconditionError(f"cannot listen on ipc://{path}: {exc.strerror}") from None
    if mode is not None and not stat.S_ISSOCK(mode):
        raise PreconditionError(f"cannot listen on ipc://{path}: it exists and is not a socket; "
                                "choose another --zmq-listen path (it is left as it is)")
    if mode is not None:
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.connect(str(path))
            raise PreconditionError(f"cannot listen on ipc://{path}: another process is serving on it; "
                                    "stop it or choose another --zmq-listen path")
        except OSError:
            log.info("removing stale socket %s", path)
            path.unlink()
        finally:
            probe.close()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise PreconditionError(f"cannot create the socket folder {path.parent}: {exc.strerror}") from None
