"""The worker half every benchmark's floor shares: the least a design with one worker process can do.

A floor server leaves its input in shared memory, sends one byte down a pipe to a
worker process that invokes the model, and reads the worker's reply on its event loop:
the two wake-ups a worker process costs, and nothing of the daemon's.
"""
from __future__ import annotations

import asyncio
import multiprocessing
from multiprocessing.connection import Connection
from typing import Any, Callable, Tuple


def start_worker(target: Callable[..., None], *args: Any) -> Tuple[Connection, multiprocessing.process.BaseProcess]:
    """Spawn ``target(conn, *args)``; return this end of its pipe once it has said ``b"ready"``."""
    conn, child = multiprocessing.Pipe()
    worker = multiprocessing.get_context("spawn").Process(target=target, args=(child, *args), daemon=True)
    worker.start()
    if conn.recv_bytes() != b"ready":
        raise RuntimeError("the floor's worker did not start")
    return conn, worker


async def round_trip(conn: Connection) -> bytes:
    """Wake the worker with one byte and await its reply, read when the loop sees the pipe readable."""
    loop = asyncio.get_running_loop()
    replied: "asyncio.Future[bytes]" = loop.create_future()

    def on_reply() -> None:
        loop.remove_reader(conn.fileno())
        replied.set_result(conn.recv_bytes())
    loop.add_reader(conn.fileno(), on_reply)
    conn.send_bytes(b"\x01")
    return await replied
