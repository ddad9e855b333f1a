"""What the activities share in one worker process: settings, index pool, blob store."""

from __future__ import annotations

from dataclasses import dataclass

from psycopg_pool import AsyncConnectionPool

from archive.blobstore import BlobStore, open_blob_store
from archive.index.pool import open_index_pool
from archive.settings import Settings


@dataclass
class ActivityContext:
    settings: Settings
    pool: AsyncConnectionPool
    blobs: BlobStore

    @classmethod
    async def open(cls, settings: Settings) -> "ActivityContext":
        pool = await open_index_pool(settings.effective_postgres_dsn(), max_size=8)
        return cls(settings, pool, open_blob_store(settings))

    async def close(self) -> None:
        await self.pool.close()
