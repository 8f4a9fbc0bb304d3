"""Frame flow control for the bidirectional Stream RPC.

Camera apps send frames as fast as they capture them. This keeps up to
``max_in_flight`` frames running, answers in arrival order, and when frames
pile up either slows the reader (keep-all: gRPC flow control pushes back on the
client) or replaces the waiting frame with the newest one (latest-wins: the
replaced frame is answered as dropped, never silently lost). A client that
stops reading its answers stops the reader too, once ``UNSENT_ANSWERS`` answers
beyond the running frames wait to be sent: otherwise every frame it keeps sending
would leave one more answer in memory. When the client goes away, every queued
and running frame is cancelled.
"""
from __future__ import annotations

import asyncio
from typing import AsyncIterator, Awaitable, Callable, Generic, Optional, Set, Tuple, TypeVar

F = TypeVar("F")  # an incoming frame
R = TypeVar("R")  # its response

_END = object()

#: Answers that may wait to be sent, beyond one per running frame, before the reader pauses.
UNSENT_ANSWERS = 16


class FramePipeline(Generic[F, R]):
    """Runs ``process`` on frames with bounded concurrency, answering in order.

    ``process(frame)`` must turn its own failures into a response (a frame error
    does not end the stream); ``dropped(frame)`` builds the answer for a frame
    replaced under the latest-wins policy.
    """

    def __init__(self, process: Callable[[F], Awaitable[R]], dropped: Callable[[F], R],
                 max_in_flight: int, latest_wins: bool) -> None:
        self._process = process
        self._dropped = dropped
        self._max = max(1, max_in_flight)
        self._latest_wins = latest_wins
        self._slots: "asyncio.Queue[object]" = asyncio.Queue()
        self._tasks: Set["asyncio.Task[R]"] = set()
        self._waiting: Optional[Tuple[F, "asyncio.Future[R]"]] = None
        self._room = asyncio.Event()
        self._room.set()
        self._unsent = asyncio.Semaphore(self._max + UNSENT_ANSWERS)  # answers admitted, not yet sent

    async def run(self, frames: AsyncIterator[F]) -> AsyncIterator[R]:
        """Responses in frame order; raises what reading ``frames`` raised.

        Raises:
            Exception: whatever iterating ``frames`` raised (e.g. a malformed message).
        """
        reader = asyncio.ensure_future(self._read(frames))
        try:
            while True:
                slot = await self._slots.get()
                if slot is _END:
                    break
                if isinstance(slot, BaseException):
                    raise slot
                yield await slot  # type: ignore[misc]
                self._unsent.release()  # the caller took it: sent
        finally:
            reader.cancel()
            waiting, self._waiting = self._waiting, None
            if waiting is not None:
                waiting[1].cancel()
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(reader, *self._tasks, return_exceptions=True)

    async def _read(self, frames: AsyncIterator[F]) -> None:
        try:
            async for frame in frames:
                await self._admit(frame)
            self._slots.put_nowait(_END)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - handed to the writer, which re-raises it
            self._slots.put_nowait(exc)

    async def _admit(self, frame: F) -> None:
        await self._unsent.acquire()
        answer: "asyncio.Future[R]" = asyncio.get_running_loop().create_future()
        self._slots.put_nowait(answer)
        if len(self._tasks) < self._max and self._waiting is None:
            self._start(frame, answer)
            return
        if self._waiting is not None:
            if not self._latest_wins:  # cannot happen: keep-all waits for room below
                raise RuntimeError("frame admitted while another waits")
            old_frame, old_answer = self._waiting
            old_answer.set_result(self._dropped(old_frame))
        self._waiting = (frame, answer)
        self._room.clear()
        if not self._latest_wins:
            await self._room.wait()

    def _start(self, frame: F, answer: "asyncio.Future[R]") -> None:
        task = asyncio.ensure_future(self._process(frame))
        self._tasks.add(task)
        task.add_done_callback(lambda t: self._finished(t, answer))

    def _finished(self, task: "asyncio.Task[R]", answer: "asyncio.Future[R]") -> None:
        self._tasks.discard(task)
        if not answer.done():
            if task.cancelled():
                answer.cancel()
            elif task.exception() is not None:
                answer.set_exception(task.exception())  # type: ignore[arg-type]
            else:
                answer.set_result(task.result())
        if self._waiting is not None and len(self._tasks) < self._max:
            frame, waiting_answer = self._waiting
            self._waiting = None
            self._start(frame, waiting_answer)
        if self._waiting is None:
            self._room.set()
