"""The receiving side's door in a workflow worker: forwards that copy into another tenant of this
archive receive their copies through it (activities/tenant_copy.py), exactly as the SCP and the
STOW-RS route receive theirs. Opened on first use, since most workers never copy."""

from __future__ import annotations

import asyncio

from archive.config.settings import Settings
from archive.resources import Resources
from receiving.ingest import Ingest

POOL_SIZE = 4  # copies run a few at a time (the target's slots), each receipt a transaction or two


class WorkerIngest:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._ingest: Ingest | None = None
        self._lock = asyncio.Lock()

    async def __call__(self) -> Ingest:
        async with self._lock:
            if self._ingest is None:
                self._ingest = await Ingest.open(await Resources.open(self.settings, pool_size=POOL_SIZE))
            return self._ingest

    async def close(self) -> None:
        if self._ingest is not None:
            await self._ingest.close()
            await self._ingest.resources.close()
