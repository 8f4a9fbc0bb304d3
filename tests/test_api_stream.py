"""FramePipeline: order, keep-all backpressure, latest-frame-wins dropping, cancellation."""
from __future__ import annotations

import asyncio
from typing import Dict, List, Sequence, Tuple

import pytest

from edgetpud.daemon.api.stream import FramePipeline


class Steps:
    """A frame source and a processor whose every step the test releases by hand."""

    def __init__(self) -> None:
        self.incoming: "asyncio.Queue[object]" = asyncio.Queue()
        self.release: Dict[int, asyncio.Event] = {}
        self.started: List[int] = []
        self.cancelled: List[int] = []

    async def frames(self):
        while True:
            item = await self.incoming.get()
            if item is None:
                return
            yield item

    async def process(self, frame: int) -> str:
        self.started.append(frame)
        event = self.release.setdefault(frame, asyncio.Event())
        try:
            await event.wait()
        except asyncio.CancelledError:
            self.cancelled.append(frame)
            raise
        return f"ok:{frame}"

    def finish(self, frame: int) -> None:
        self.release.setdefault(frame, asyncio.Event()).set()

    def serve(self, frames: Sequence[int], max_in_flight: int,
              latest_wins: bool) -> Tuple["asyncio.Future[None]", List[str]]:
        """Run a pipeline over these steps in the background, then queue ``frames``.

        Returns the collecting task and the list it fills, so a test can watch what has
        been sent so far while it releases steps by hand.
        """
        pipeline = FramePipeline(self.process, lambda f: f"dropped:{f}", max_in_flight=max_in_flight,
                                 latest_wins=latest_wins)
        out: List[str] = []

        async def collect() -> None:
            async for r in pipeline.run(self.frames()):
                out.append(r)
        collector = asyncio.ensure_future(collect())
        for frame in frames:
            self.incoming.put_nowait(frame)
        return collector, out


async def settle() -> None:
    for _ in range(10):
        await asyncio.sleep(0)


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 10))


def test_latest_wins_replaces_the_waiting_frame_and_reports_it():
    async def scenario():
        steps = Steps()
        collector, out = steps.serve((1, 2, 3, 4), max_in_flight=1, latest_wins=True)
        await settle()
        assert steps.started == [1]            # one in flight, 4 waits, 2 and 3 were replaced
        steps.finish(1)
        await settle()
        assert steps.started == [1, 4]
        steps.finish(4)
        steps.incoming.put_nowait(None)
        await collector
        return out
    assert run(scenario()) == ["ok:1", "dropped:2", "dropped:3", "ok:4"]


def test_keep_all_serves_every_frame_in_order_with_bounded_concurrency():
    async def scenario():
        steps = Steps()
        collector, out = steps.serve((1, 2, 3, 4), max_in_flight=2, latest_wins=False)
        await settle()
        assert steps.started == [1, 2]         # the reader waits: frame 3 waits, 4 is not read yet
        assert steps.incoming.qsize() == 1
        steps.finish(2)                        # out of order
        await settle()
        assert steps.started == [1, 2, 3]
        assert out == []                       # 2 is done but 1 is not: nothing may be sent yet
        for frame in (1, 3, 4):
            steps.finish(frame)
        steps.incoming.put_nowait(None)
        await collector
        return out
    assert run(scenario()) == ["ok:1", "ok:2", "ok:3", "ok:4"]


def test_closing_the_output_cancels_running_frames():
    async def scenario():
        steps = Steps()
        pipeline = FramePipeline(steps.process, lambda f: f"dropped:{f}", max_in_flight=2, latest_wins=True)
        responses = pipeline.run(steps.frames())
        first = asyncio.ensure_future(responses.__anext__())
        for frame in (1, 2, 3):
            steps.incoming.put_nowait(frame)
        await settle()
        first.cancel()                         # what grpc does when the client goes away
        with pytest.raises(asyncio.CancelledError):
            await first
        await responses.aclose()
        return steps
    steps = run(scenario())
    assert sorted(steps.cancelled) == [1, 2]


def test_a_reader_error_ends_the_stream_after_earlier_answers():
    async def scenario():
        async def frames():
            yield 1
            raise ValueError("second config message")

        async def process(frame):
            return f"ok:{frame}"
        pipeline = FramePipeline(process, str, max_in_flight=1, latest_wins=False)
        out = []
        with pytest.raises(ValueError, match="second config"):
            async for r in pipeline.run(frames()):
                out.append(r)
        return out
    assert run(scenario()) == ["ok:1"]


@pytest.mark.parametrize("latest_wins", [True, False], ids=["latest-wins", "keep-all"])
def test_a_client_that_stops_reading_answers_stops_the_reader_and_memory_stays_bounded(latest_wins):
    """Frames kept coming while the answers waited unsent: each frame left one more answer in memory."""
    from edgetpud.daemon.api.stream import UNSENT_ANSWERS

    async def scenario():
        async def process(frame: int) -> str:
            return f"ok:{frame}"
        read: List[int] = []

        async def frames():
            for frame in range(1, 501):
                read.append(frame)
                yield frame
        answers = FramePipeline(process, lambda f: f"dropped:{f}", max_in_flight=2,
                                latest_wins=latest_wins).run(frames())
        first = await answers.__anext__()  # the client reads one answer, then stops reading
        for _ in range(200):
            await asyncio.sleep(0)
        paused_at = len(read)
        rest = [answer async for answer in answers]  # it reads again: everything follows, in order
        return first, paused_at, rest
    first, paused_at, rest = run(scenario())
    assert paused_at <= 2 + UNSENT_ANSWERS + 2, paused_at
    answers = [first] + rest
    assert [int(a.split(":")[1]) for a in answers] == list(range(1, 501))
