"""Removing the blobs the index queued for removal (archive/index/blob_removals.py): right after
the commit that queued them, and, for what a process that died in between left, by a loop in every
workflow worker a minute later."""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import Awaitable, Callable
from typing import Any

from psycopg_pool import AsyncConnectionPool

from archive.blobstore.base import BlobStore
from archive.blobstore.removal import remove_blobs
from archive.index.blob_removals import removals_done, removals_due

log = logging.getLogger("dicomflow.blobs")

InThread = Callable[..., Awaitable[Any]]  # asyncio.to_thread, or a worker's background threads
DRAIN_GRACE_SECONDS = 60.0  # longer than any removal right after its commit takes
DRAIN_INTERVAL_SECONDS = 15.0


async def remove_queued(
    pool: AsyncConnectionPool, blobs: BlobStore, keys: list[str], what: str, in_thread: InThread = asyncio.to_thread
) -> int:
    """Remove `keys`, queued by the transaction that just committed, and their queue entries."""
    removed: list[str] = await in_thread(remove_blobs, blobs, keys, what)
    await removals_done(pool, removed)
    return len(removed)


async def drain_once(pool: AsyncConnectionPool, blobs: BlobStore, grace: float = DRAIN_GRACE_SECONDS) -> int:
    by_reason: dict[str, list[str]] = defaultdict(list)
    for key, reason in await removals_due(pool, grace):
        by_reason[reason].append(key)
    removed = 0
    for reason, keys in by_reason.items():
        removed += await remove_queued(pool, blobs, keys, f"a {reason} object a stopped process left")
    if removed:
        log.warning("removed %d blobs queued for removal by a process that stopped before it could", removed)
    return removed


async def drain_forever(pool: AsyncConnectionPool, blobs: BlobStore, interval: float = DRAIN_INTERVAL_SECONDS) -> None:
    while True:
        await asyncio.sleep(interval)
        try:
            await drain_once(pool, blobs)
        except Exception:  # noqa: BLE001 - the queue keeps them; next round
            log.warning("draining queued blob removals failed", exc_info=True)
