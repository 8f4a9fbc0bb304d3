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

pyzmq's asyncio sockets run on the daemon's own loop (no thread): a request costs a
wake-up of the loop that already runs the scheduler and the gRPC server.
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


class FrigateUnavailableError(EdgetpudError):
    """--zmq-listen was given but pyzmq is not installed."""


def import_zmq() -> Any:
    """pyzmq's asyncio module.

    Raises:
        FrigateUnavailableError: pyzmq is missing (an optional extra).
    """
    try:
        import zmq
        import zmq.asyncio
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
        self._receiver: Optional["asyncio.Task[None]"] = None
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
        self._socket = sock
        self._receiver = asyncio.ensure_future(self._receive())
        log.info("frigate zmq detector listening on %s (mode %o)", self.address, self._mode)

    def close_now(self) -> None:
        """Close at once (a start that failed on another endpoint)."""
        if self._receiver is not None:
            self._receiver.cancel()
        if self._socket is not None:
            self._socket.close(0)
            self._socket = None
        try:
            self.path.unlink()
        except OSError:
            pass

    async def stop(self, grace_s: float) -> None:
        """Stop reading, let the requests being served finish within ``grace_s``, then close."""
        if self._receiver is not None:
            self._receiver.cancel()
            await asyncio.gather(self._receiver, return_exceptions=True)
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

    async def _receive(self) -> None:
        zmq = import_zmq()
        while True:
            try:
                frames = await self._socket.recv_multipart(copy=False)
            except asyncio.CancelledError:
                raise
            except zmq.ZMQError as exc:
                log.warning("frigate: receiving on %s failed: %s", self.address, exc)
                await asyncio.sleep(0.01)
                continue
            envelope, body = _split_envelope(frames)
            if envelope is None:
                continue  # not from a REQ socket: no one to answer
            if len(self._tasks) >= self._max_in_flight:
                self._send(envelope, protocol.error_detections(
                    f"busy: {self._max_in_flight} requests in flight on {self.address}"))
                continue
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
        zmq = import_zmq()
        try:
            self._socket.send_multipart(envelope + reply, flags=zmq.NOBLOCK, copy=False)
        except zmq.ZMQError as exc:
            log.debug("frigate: an answer on %s was dropped: %s", self.address, exc)


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
