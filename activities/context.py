"""What the activities share in one worker process: settings, index pool, blob store, and the
background threads the study's heavy steps run on (archive/priority)."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

from psycopg_pool import AsyncConnectionPool, ConnectionPool

from activities.json_fragments import JsonFragments
from archive.blobstore import BlobStore, open_blob_store
from archive.config.settings import Settings
from archive.index.pool import open_index_pool
from archive.index.retrieves import open_acknowledgement_pool
from archive.priority import background_priority

T = TypeVar("T")
BACKGROUND_THREADS = 4


@dataclass
class ActivityContext:
    settings: Settings
    pool: AsyncConnectionPool
    blobs: BlobStore
    acknowledgements: ConnectionPool  # for the retrieve's sending thread (archive.index.retrieves.Acknowledgements)
    json_fragments: JsonFragments = field(default_factory=JsonFragments)  # each object's DICOM JSON, once
    background: ThreadPoolExecutor = field(
        default_factory=lambda: ThreadPoolExecutor(
            BACKGROUND_THREADS, thread_name_prefix="dicomflow-background", initializer=background_priority
        )
    )

    async def in_background(self, work: Callable[..., T], *args: Any) -> T:
        """`asyncio.to_thread`, on a thread that yields the CPU to receipt."""
        return await asyncio.get_running_loop().run_in_executor(self.background, functools.partial(work, *args))

    @classmethod
    async def open(cls, settings: Settings) -> "ActivityContext":
        pool = await open_index_pool(settings.effective_postgres_dsn(), max_size=8)
        acknowledgements = await asyncio.to_thread(open_acknowledgement_pool, settings.effective_postgres_dsn())
        return cls(settings, pool, open_blob_store(settings.storage, settings.var_path), acknowledgements)

    async def close(self) -> None:
        await self.pool.close()
        await asyncio.to_thread(self.acknowledgements.close)
        self.background.shutdown(wait=False, cancel_futures=True)
