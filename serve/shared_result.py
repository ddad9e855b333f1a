"""One computation shared by every caller that asks while it runs, and reused for a short while.

`GET /health` answers anyone (a load balancer has no token), and one health check opens a
connection to every service dicomflow depends on and sends a C-ECHO. Without sharing, a flood of
unauthenticated callers would become a flood of PostgreSQL connections and associations.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class SharedResult(Generic[T]):
    def __init__(
        self, compute: Callable[[], Awaitable[T]], fresh_for: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._compute = compute
        self._fresh_for = fresh_for
        self._clock = clock
        self._value: T | None = None
        self._computed_at = float("-inf")
        self._running: asyncio.Future[T] | None = None

    async def get(self) -> T:
        """The last result while it is fresh; else the running computation's, or a new one's. A
        failure reaches every caller waiting for that computation and is not kept."""
        if self._value is not None and self._clock() - self._computed_at < self._fresh_for:
            return self._value
        if self._running is None:
            self._running = asyncio.ensure_future(self._refresh())
        # shielded: one caller that goes away does not cancel the others' answer
        return await asyncio.shield(self._running)

    async def _refresh(self) -> T:
        try:
            value = await self._compute()
            self._value, self._computed_at = value, self._clock()
            return value
        finally:
            self._running = None
