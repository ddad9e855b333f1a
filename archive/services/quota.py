"""Per-tenant storage quotas (settings `quota_bytes`): a receipt that would take a tenant past its
quota is refused before anything is written (C-STORE A7xx, STOW-RS 413), and nothing stored is
touched. What a tenant holds is read from the index at most every `refresh_seconds` per process:
a quota is a budget, not an exact fence, so a burst may pass it by what arrives in that time."""

from __future__ import annotations

import asyncio
import time

from psycopg_pool import AsyncConnectionPool

from archive.index.usage import stored_bytes


class QuotaGate:
    def __init__(self, pool: AsyncConnectionPool, quotas: dict[str, int], refresh_seconds: float = 10.0) -> None:
        self.pool = pool
        self.quotas = quotas
        self.refresh_seconds = refresh_seconds
        self._used: dict[str, tuple[float, int]] = {}
        # the parts of one STOW request ask at once: each must see what the others took
        self._lock = asyncio.Lock()

    async def refusal(self, tenant: str, incoming: int) -> str | None:
        """Why `incoming` more bytes may not be stored for `tenant`, or None."""
        quota = self.quotas.get(tenant)
        if quota is None:
            return None
        async with self._lock:
            used = await self._usage(tenant)
            if used + incoming <= quota:
                self._used[tenant] = (self._used[tenant][0], used + incoming)  # counted until the next read
                return None
        return f"tenant {tenant} is over its storage quota ({used} of {quota} bytes used); ask the archive's administrator"

    async def _usage(self, tenant: str) -> int:
        read_at, used = self._used.get(tenant, (0.0, 0))
        if time.monotonic() - read_at > self.refresh_seconds:
            used = await stored_bytes(self.pool, tenant)
            self._used[tenant] = (time.monotonic(), used)
        return used
