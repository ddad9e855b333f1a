"""Waiting for the decode pool, on threads of its own, a few per tenant.

A call into archive/pixels/decode_pool.py blocks its thread until a worker is free and has decoded (up to
decode_timeout_seconds). Run on the event loop's default executor, as asyncio.to_thread does,
those waits took every thread a replica has (Ray gives a num_cpus=0 replica 5) and everything
else that needs a thread (blob reads, metadata, STOW parsing) queued behind them: seen, an
unrelated call waited 23.5 s behind 10 slow renders. Here decode waits have their own bounded
set of threads, and a tenant holds at most `per_tenant` of them; a tenant over its share waits
on the event loop (holding no thread) for at most `wait_seconds`, then is told to come back
(DecodeBusy: 503 with Retry-After)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")


class DecodeBusy(Exception):
    """No decode thread came free for this tenant in time; the request may be sent again later."""


class DecodeGate:
    """One per replica (per event loop): its asyncio semaphores belong to the loop that first uses them."""

    def __init__(self, threads: int, per_tenant: int, wait_seconds: float) -> None:
        self.threads, self.per_tenant, self.wait_seconds = threads, min(per_tenant, threads), wait_seconds
        self._executor = ThreadPoolExecutor(threads, thread_name_prefix="decode-wait")
        self._all = asyncio.Semaphore(threads)
        self._tenants: dict[str, asyncio.Semaphore] = {}

    async def run(self, tenant: str, work: Callable[[], T]) -> T:
        """work() on one of the gate's threads, once `tenant` is admitted (or DecodeBusy)."""
        held = await self._admitted(tenant)
        try:
            future = self._executor.submit(work)
        except BaseException:
            self._release(held)
            raise
        loop = asyncio.get_running_loop()
        # The slots come back when the thread is done, not when the caller stops waiting: a client
        # that hangs up leaves its decode running, and that thread is still taken until it ends.
        future.add_done_callback(lambda _: loop.call_soon_threadsafe(self._release, held))
        return await asyncio.wrap_future(future)

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)

    async def _admitted(self, tenant: str) -> list[asyncio.Semaphore]:
        # the tenant's share first: a tenant over it never takes a thread another tenant could use
        wanted = [self._tenants.setdefault(tenant, asyncio.Semaphore(self.per_tenant)), self._all]
        held: list[asyncio.Semaphore] = []
        try:
            async with asyncio.timeout(self.wait_seconds):
                for slots in wanted:
                    await slots.acquire()
                    held.append(slots)
        except BaseException as err:
            self._release(held)
            if isinstance(err, TimeoutError):
                raise DecodeBusy(self._why(tenant, held)) from None
            raise
        return held

    def _why(self, tenant: str, held: list[asyncio.Semaphore]) -> str:
        full = (
            f"tenant {tenant!r} has its {self.per_tenant} decodes under way"
            if not held
            else f"all {self.threads} decode threads of this replica are busy"
        )
        return f"{full} and none ended within {self.wait_seconds:g} s; try again"

    @staticmethod
    def _release(held: list[asyncio.Semaphore]) -> None:
        for slots in held:
            slots.release()


class Waits:
    """Where one request's blocking work waits: with a gate, on its threads under the request's
    tenant's share (work that waits for the decode pool); without, on the default executor."""

    def __init__(self, gate: DecodeGate | None = None, tenant: str = "") -> None:
        self.gate, self.tenant = gate, tenant

    def run(self, work: Callable[[], T]) -> Awaitable[T]:
        return asyncio.to_thread(work) if self.gate is None else self.gate.run(self.tenant, work)
