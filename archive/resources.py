"""What a serving process holds open for the archive: the index pool, the blob store, the Redis
cache and the audit writer. Plain objects for the protocol layers to share, opened once."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from psycopg_pool import AsyncConnectionPool

from archive.audit import AuditLog
from archive.blobstore import BlobStore, open_blob_store
from archive.cache import Cache
from archive.config.settings import Settings
from archive.index.pool import open_index_pool


@dataclass
class Resources:
    settings: Settings
    pool: AsyncConnectionPool
    blobs: BlobStore
    cache: Cache
    audit: AuditLog

    @classmethod
    async def open(cls, settings: Settings, pool_size: int = 10) -> "Resources":
        pool = await open_index_pool(settings.effective_postgres_dsn(), max_size=pool_size)
        blobs = await asyncio.to_thread(open_blob_store, settings.storage, settings.var_path)
        cache = Cache.from_url(settings.effective_redis_url(), settings.cache.ttl_seconds)
        audit = AuditLog(pool)
        audit.start()
        return cls(settings, pool, blobs, cache, audit)

    async def close(self) -> None:
        await self.audit.close()
        await self.cache.close()
        await self.pool.close()
