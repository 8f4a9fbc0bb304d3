"""A worker process started ahead of need, so a restart skips spawning Python."""
from __future__ import annotations

import multiprocessing
from typing import Any, Optional, Tuple

from .child import worker_main


class SpareWorker:
    """A worker process started ahead of need, for fast restarts.

    Most of a restart is spawning Python and importing numpy and the TFLite
    runtime; a spare has done that already and only waits to be told which device
    it serves. ``take`` hands it over once; ``close`` ends an unused one.
    """

    def __init__(self) -> None:
        ctx = multiprocessing.get_context("spawn")
        self._conn, child_conn = ctx.Pipe(duplex=True)
        self._process: Optional[multiprocessing.process.BaseProcess] = ctx.Process(
            target=worker_main, args=(child_conn, None), name="edgetpud-worker-spare", daemon=True)
        self._process.start()
        child_conn.close()

    def take(self) -> Optional[Tuple[multiprocessing.process.BaseProcess, Any]]:
        """The process and its pipe, or None when it died or was taken already."""
        process, self._process = self._process, None
        if process is None:
            return None
        if not process.is_alive():
            process.join(1.0)
            self._conn.close()
            return None
        return process, self._conn

    def close(self) -> None:
        process, self._process = self._process, None
        if process is not None:
            self._conn.close()  # the spare sees EOF and exits
            process.join(5.0)
            if process.is_alive():
                process.kill()
                process.join(5.0)
