"""Concurrent callers of a SharedResult share one computation; a fresh result is reused; failures are not kept."""

import asyncio

import pytest

from serve.shared_result import SharedResult


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_concurrent_callers_share_one_computation_and_reuse_it_while_fresh():
    clock, calls = Clock(), []

    async def compute() -> dict:
        calls.append(clock.now)
        await asyncio.sleep(0.05)  # long enough for every caller to arrive while it runs
        return {"run": len(calls)}

    async def scenario() -> None:
        shared = SharedResult(compute, fresh_for=2.0, clock=clock)
        answers = await asyncio.gather(*(shared.get() for _ in range(50)))
        assert len(calls) == 1 and all(a == {"run": 1} for a in answers)
        clock.now += 1.9
        assert await shared.get() == {"run": 1} and len(calls) == 1
        clock.now += 0.2
        assert await shared.get() == {"run": 2} and len(calls) == 2

    asyncio.run(scenario())


def test_a_failure_reaches_every_waiting_caller_and_the_next_call_tries_again():
    attempts = []

    async def compute() -> str:
        attempts.append(1)
        await asyncio.sleep(0.01)
        if len(attempts) == 1:
            raise ConnectionError("redis down")
        return "ok"

    async def scenario() -> None:
        shared = SharedResult(compute, fresh_for=60.0)
        results = await asyncio.gather(*(shared.get() for _ in range(5)), return_exceptions=True)
        assert len(attempts) == 1 and all(isinstance(r, ConnectionError) for r in results)
        assert await shared.get() == "ok" and len(attempts) == 2

    asyncio.run(scenario())


def test_a_caller_that_goes_away_does_not_cancel_the_others():
    async def compute() -> int:
        await asyncio.sleep(0.05)
        return 7

    async def scenario() -> None:
        shared = SharedResult(compute, fresh_for=1.0)
        impatient = asyncio.ensure_future(shared.get())
        patient = asyncio.ensure_future(shared.get())
        await asyncio.sleep(0.01)
        impatient.cancel()
        with pytest.raises(asyncio.CancelledError):
            await impatient
        assert await patient == 7

    asyncio.run(scenario())
