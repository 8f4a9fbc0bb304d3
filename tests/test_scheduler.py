"""Scheduler unit tests with a deterministic fake pool: the test decides when each invocation ends."""
from __future__ import annotations

import asyncio
import time
from typing import Dict, List, Tuple

import numpy as np
import pytest

from fake_pool import FakePool
from edgetpud.daemon.errors import PreconditionError, ResourceExhaustedError
from edgetpud.daemon.scheduler import DeadlineExceededError, Scheduler
from edgetpud.hal.errors import DeviceUnavailableError, ModelRuntimeError

X = [np.zeros((1, 2), np.uint8)]


async def settle(rounds: int = 5) -> None:
    for _ in range(rounds):
        await asyncio.sleep(0)


def make(capacity: Dict[str, int], depth: int = 4, loader=None, holders: Dict[str, List[str]] | None = None):
    pool = FakePool(capacity)
    sched = Scheduler(pool, queue_depth=depth, loader=loader)
    sched.set_devices(capacity)
    for key, devices in (holders if holders is not None else {"m@1": list(capacity)}).items():
        for device in devices:
            sched.placed(key, device)
    return pool, sched


async def running_and_queued(sched: Scheduler) -> Tuple[asyncio.Future, asyncio.Future]:
    """One request on the only slot and one waiting behind it: where the queue tests start."""
    running = asyncio.ensure_future(sched.run("m@1", X))
    await settle()
    queued = asyncio.ensure_future(sched.run("m@1", X))
    await settle()
    return running, queued


def test_result_device_and_timing():
    async def main():
        pool, sched = make({"mock:0": 1})
        task = asyncio.ensure_future(sched.run("m@1", X))
        await settle()
        pool.finish()
        result = await asyncio.wait_for(task, 2)
        assert result.device == "mock:0"
        assert result.outputs[0].tolist() == [1.0]
        assert result.queue_s >= 0 and result.invoke_s >= 0
    asyncio.run(main())


def test_keeps_device_busy_up_to_capacity():
    async def main():
        pool, sched = make({"mock:0": 3}, depth=8)
        tasks = [asyncio.ensure_future(sched.run("m@1", X)) for _ in range(5)]
        await settle()
        assert len(pool.pending()) == 3
        assert sched.queue_depths() == {"mock:0": 2}
        for _ in range(5):
            pool.finish()
            await settle()
        await asyncio.wait_for(asyncio.gather(*tasks), 2)
        assert len(pool.submitted) == 5
    asyncio.run(main())


def test_affinity_prefers_the_holder_even_when_another_is_idle():
    async def main():
        pool, sched = make({"mock:0": 1, "mock:1": 1}, holders={"m@1": ["mock:1"]})
        tasks = [asyncio.ensure_future(sched.run("m@1", X)) for _ in range(2)]
        await settle()
        assert [d for d, _, _ in pool.submitted] == ["mock:1"]
        assert sched.queue_depths()["mock:1"] == 1
        pool.finish(); await settle(); pool.finish()
        results = await asyncio.wait_for(asyncio.gather(*tasks), 2)
        assert {r.device for r in results} == {"mock:1"}
    asyncio.run(main())


def test_least_loaded_holder_wins():
    async def main():
        pool, sched = make({"mock:0": 1, "mock:1": 1})
        first = asyncio.ensure_future(sched.run("m@1", X))
        await settle()
        second = asyncio.ensure_future(sched.run("m@1", X))
        await settle()
        assert sorted(d for d, _, _ in pool.submitted) == ["mock:0", "mock:1"]
        pool.fail(ModelRuntimeError("bad input"), device="mock:0")
        pool.finish()
        outcomes = await asyncio.gather(first, second, return_exceptions=True)
        assert sum(isinstance(o, ModelRuntimeError) for o in outcomes) == 1
    asyncio.run(main())


def test_model_on_no_device_is_loaded_on_the_least_loaded_one():
    loads: List[Tuple[str, str]] = []

    async def loader(device: str, key: str) -> None:
        loads.append((device, key))

    async def main():
        pool, sched = make({"mock:0": 1, "mock:1": 1}, loader=loader, holders={"busy@1": ["mock:0"]})
        busy = asyncio.ensure_future(sched.run("busy@1", X))
        await settle()
        task = asyncio.ensure_future(sched.run("new@1", X))
        await settle()
        assert loads == [("mock:1", "new@1")]
        assert sched.holders("new@1") == {"mock:1"}
        pool.finish(device="mock:1"); pool.finish(device="mock:0")
        assert (await asyncio.wait_for(task, 2)).device == "mock:1"
        await busy
    asyncio.run(main())


def test_no_loader_and_no_holder_is_unavailable():
    async def main():
        _, sched = make({"mock:0": 1}, holders={})
        with pytest.raises(DeviceUnavailableError, match="not loaded"):
            await asyncio.wait_for(sched.run("m@1", X), 2)
    asyncio.run(main())


def test_expired_deadline_is_refused_without_running():
    async def main():
        pool, sched = make({"mock:0": 1})
        with pytest.raises(DeadlineExceededError):
            await sched.run("m@1", X, deadline=time.monotonic() - 1)
        assert pool.submitted == []
    asyncio.run(main())


def test_deadline_passing_in_the_queue_answers_without_running():
    async def main():
        pool, sched = make({"mock:0": 1})
        running = asyncio.ensure_future(sched.run("m@1", X))
        await settle()
        waiting = asyncio.ensure_future(sched.run("m@1", X, deadline=time.monotonic() + 0.02))
        with pytest.raises(DeadlineExceededError, match="not run"):
            await asyncio.wait_for(waiting, 2)
        assert sched.queue_depths() == {"mock:0": 0}
        pool.finish()
        await running
        assert len(pool.submitted) == 1
    asyncio.run(main())


def test_full_queue_is_refused_at_once():
    async def main():
        pool, sched = make({"mock:0": 1}, depth=2)
        tasks = [asyncio.ensure_future(sched.run("m@1", X)) for _ in range(3)]
        await settle()
        with pytest.raises(ResourceExhaustedError, match="full"):
            await sched.run("m@1", X)
        for _ in range(3):
            pool.finish(); await settle()
        await asyncio.gather(*tasks)
    asyncio.run(main())


def test_cancelled_request_leaves_the_queue_and_never_runs():
    async def main():
        pool, sched = make({"mock:0": 1})
        running, queued = await running_and_queued(sched)
        assert sched.queue_depths() == {"mock:0": 1}
        queued.cancel()
        await settle()
        assert sched.queue_depths() == {"mock:0": 0}
        pool.finish()
        await running
        await settle()
        assert len(pool.submitted) == 1 and queued.cancelled()
    asyncio.run(main())


def test_device_death_requeues_waiting_and_retries_inflight_elsewhere():
    async def main():
        pool, sched = make({"mock:0": 1, "mock:1": 1}, holders={"m@1": ["mock:0"]})
        tasks = [asyncio.ensure_future(sched.run("m@1", X)) for _ in range(3)]
        await settle()
        assert len(pool.pending("mock:0")) == 1 and sched.queue_depths()["mock:0"] == 2
        sched.placed("m@1", "mock:1")
        sched.device_lost("mock:0")
        pool.fail(DeviceUnavailableError("worker died"), device="mock:0")
        await settle(10)
        assert sched.queue_depths()["mock:0"] == 0
        for _ in range(3):
            assert len(pool.pending("mock:1")) == 1
            pool.finish(device="mock:1")
            await settle(10)
        results = await asyncio.wait_for(asyncio.gather(*tasks), 2)
        assert {r.device for r in results} == {"mock:1"}
    asyncio.run(main())


def test_inflight_fails_unavailable_when_no_other_device():
    async def main():
        pool, sched = make({"mock:0": 1})
        task = asyncio.ensure_future(sched.run("m@1", X))
        await settle()
        pool.fail(DeviceUnavailableError("worker for mock:0 died"))
        with pytest.raises(DeviceUnavailableError, match="died"):
            await asyncio.wait_for(task, 2)
    asyncio.run(main())


def test_submit_refused_by_a_dead_device_is_retried_on_another():
    async def main():
        pool, sched = make({"mock:0": 1, "mock:1": 1})
        pool.refuse_submit["mock:0"] = DeviceUnavailableError("gone")
        task = asyncio.ensure_future(sched.run("m@1", X))
        await settle(10)
        pool.finish(device="mock:1")
        assert (await asyncio.wait_for(task, 2)).device == "mock:1"
    asyncio.run(main())


def test_close_fails_queued_and_refuses_new():
    async def main():
        pool, sched = make({"mock:0": 1})
        running, queued = await running_and_queued(sched)
        sched.close()
        with pytest.raises(PreconditionError):
            await queued
        with pytest.raises(PreconditionError):
            await sched.run("m@1", X)
        pool.finish()
        await running
    asyncio.run(main())


def test_waiting_requests_stay_for_a_restarting_only_device():
    async def main():
        pool, sched = make({"mock:0": 1})
        running, queued = await running_and_queued(sched)
        sched.device_lost("mock:0", permanent=False)
        pool.fail(DeviceUnavailableError("worker died"))
        with pytest.raises(DeviceUnavailableError):
            await asyncio.wait_for(running, 2)
        assert sched.queue_depths() == {"mock:0": 1} and not queued.done()
        sched.set_devices(["mock:0"])  # the worker is back
        await settle()
        pool.finish(device="mock:0")
        assert (await asyncio.wait_for(queued, 2)).device == "mock:0"
    asyncio.run(main())


def test_waiting_requests_fail_when_the_only_device_is_lost():
    async def main():
        pool, sched = make({"mock:0": 1})
        running, queued = await running_and_queued(sched)
        sched.device_lost("mock:0", permanent=True)
        pool.fail(DeviceUnavailableError("unplugged"))
        for task in (running, queued):
            with pytest.raises(DeviceUnavailableError):
                await asyncio.wait_for(task, 2)
    asyncio.run(main())


def test_new_requests_wait_for_the_only_device_while_it_restarts():
    async def main():
        pool, sched = make({"mock:0": 1})
        sched.device_lost("mock:0", permanent=False)
        task = asyncio.ensure_future(sched.run("m@1", X))
        await settle()
        assert sched.queue_depths() == {"mock:0": 1} and pool.submitted == []
        sched.set_devices(["mock:0"])
        await settle()
        pool.finish()
        assert (await asyncio.wait_for(task, 2)).device == "mock:0"
        sched.device_lost("mock:0", permanent=True)  # gone for good: nothing waits for it
        with pytest.raises(DeviceUnavailableError):
            await asyncio.wait_for(sched.run("m@1", X), 2)
    asyncio.run(main())


async def full_queue(sched: Scheduler) -> List[asyncio.Future]:
    """One request on the only slot and two queued: a depth-2 queue with no room."""
    tasks = [asyncio.ensure_future(sched.run("m@1", X)) for _ in range(3)]
    await settle()
    return tasks


async def finish_all(pool: FakePool, tasks: List[asyncio.Future]) -> list:
    """End every pending invocation, one at a time as the slot frees, and collect ``tasks``."""
    while pool.pending():
        pool.finish(); await settle()
    return await asyncio.gather(*tasks)


def test_a_request_that_may_wait_takes_the_room_a_full_queue_frees():
    async def main():
        pool, sched = make({"mock:0": 1}, depth=2)
        first = await full_queue(sched)
        waiting = asyncio.ensure_future(sched.run("m@1", X, wait_for_room=True))
        await settle()
        assert not waiting.done() and sched.queue_depths() == {"mock:0": 2}
        with pytest.raises(ResourceExhaustedError):  # a request that may not wait is still refused at once
            await sched.run("m@1", X)
        pool.finish(); await settle()  # the running one ends, a queued one starts: room for the waiter
        assert sched.queue_depths() == {"mock:0": 2} and not waiting.done()
        await finish_all(pool, first)
        assert (await waiting).device == "mock:0" and len(pool.submitted) == 4
    asyncio.run(main())


def test_waiting_for_room_ends_at_the_deadline_without_running():
    async def main():
        pool, sched = make({"mock:0": 1}, depth=2)
        first = await full_queue(sched)
        with pytest.raises(DeadlineExceededError, match="waited for room"):
            await sched.run("m@1", X, deadline=time.monotonic() + 0.02, wait_for_room=True)
        await finish_all(pool, first)
        assert len(pool.submitted) == 3
    asyncio.run(main())


def test_a_waiter_that_gives_up_passes_the_room_to_the_next_and_close_releases_the_rest():
    async def main():
        pool, sched = make({"mock:0": 1}, depth=2)
        first = await full_queue(sched)
        quitter = asyncio.ensure_future(sched.run("m@1", X, wait_for_room=True))
        patient = asyncio.ensure_future(sched.run("m@1", X, wait_for_room=True))
        last = asyncio.ensure_future(sched.run("m@1", X, wait_for_room=True))
        await settle()
        quitter.cancel()
        pool.finish(); await settle()  # one place frees: it goes to the patient one, not the quitter
        assert sched.queue_depths() == {"mock:0": 2} and not last.done()
        sched.close()  # the queued ones and the last waiter are refused; running ones finish
        with pytest.raises(PreconditionError):
            await last
        pool.finish(); await settle()
        assert quitter.cancelled() and len(pool.submitted) == 2
        await asyncio.gather(*first, patient, return_exceptions=True)
    asyncio.run(main())


def test_waiters_for_a_device_that_leaves_go_to_another_holder():
    async def main():
        pool, sched = make({"mock:0": 1, "mock:1": 1}, depth=1, holders={"m@1": ["mock:0"]})
        first = [asyncio.ensure_future(sched.run("m@1", X)) for _ in range(2)]  # mock:0 running + queue full
        await settle()
        waiting = asyncio.ensure_future(sched.run("m@1", X, wait_for_room=True))
        await settle()
        assert not waiting.done()
        sched.placed("m@1", "mock:1")
        sched.device_lost("mock:0", permanent=True)
        await settle()
        pool.finish(device="mock:1"); await settle()  # the queued request moved to mock:1 first
        pool.finish(device="mock:1"); await settle()
        assert (await waiting).device == "mock:1"
        pool.fail(DeviceUnavailableError("gone"), device="mock:0"); await settle()  # retried on mock:1
        pool.finish(device="mock:1"); await settle()
        assert [r.device for r in await asyncio.gather(*first)] == ["mock:1", "mock:1"]
    asyncio.run(main())
