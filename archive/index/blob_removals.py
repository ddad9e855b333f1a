"""Blobs to remove, queued in the same transaction that dropped the rows naming them.

Rows go first (a crash leaves blobs without rows, never rows without blobs); the blobs are then
removed and their queue entries with them. A process killed in between used to leave the bytes of
deleted or superseded objects, patient data, on disk until the orphan sweep (a day by default);
the queue keeps them named, and archive/services/removals.py finishes the job within a minute.
"""

from __future__ import annotations

from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool


async def queue_removals(conn: AsyncConnection, keys: list[str], reason: str) -> None:
    """Inside the caller's transaction: these keys go once it commits."""
    if keys:
        await conn.execute(
            "INSERT INTO blob_removal (blob_key, reason) SELECT unnest(%s::text[]), %s ON CONFLICT DO NOTHING",
            (keys, reason[:200]),
        )


async def removals_done(pool: AsyncConnectionPool, keys: list[str]) -> None:
    if keys:
        async with pool.connection() as conn:
            await conn.execute("DELETE FROM blob_removal WHERE blob_key = ANY(%s)", (keys,))


async def removals_due(pool: AsyncConnectionPool, older_than_seconds: float, limit: int = 1000) -> list[tuple[str, str]]:
    """Queued longer ago than the removal right after a commit takes: left by a process that died."""
    async with pool.connection() as conn:
        cursor = await conn.execute(
            "SELECT blob_key, reason FROM blob_removal WHERE queued_at < now() - make_interval(secs => %s)"
            " ORDER BY queued_at LIMIT %s",
            (older_than_seconds, limit),
        )
        return [(key, reason) for key, reason in await cursor.fetchall()]
