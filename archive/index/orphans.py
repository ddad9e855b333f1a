"""What the orphan sweeper asks the index: which blob keys no row names, and whose turn it is."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from psycopg_pool import AsyncConnectionPool

from archive.index.locks import SWEEPER_LOCKS


async def unreferenced(pool: AsyncConnectionPool, keys: list[str]) -> set[str]:
    """The keys no instance (original or transcoded copy) and no series document names. Only keys
    under a tenant the index knows qualify: whatever else lies in the store is not the archive's."""
    if not keys:
        return set()
    async with pool.connection() as conn:
        rows = await (
            await conn.execute(
                """SELECT k FROM unnest(%s::text[]) AS k
               WHERE EXISTS (SELECT 1 FROM tenant t WHERE t.name = split_part(k, '/', 1))
                 AND NOT EXISTS (SELECT 1 FROM instance i WHERE i.blob_key = k)
                 AND NOT EXISTS (SELECT 1 FROM instance i WHERE i.transcoded_key = k)
                 AND NOT EXISTS (SELECT 1 FROM series se WHERE se.metadata_key = k)""",
                (keys,),
            )
        ).fetchall()
    return {r[0] for r in rows}


@asynccontextmanager
async def sweeper_turn(pool: AsyncConnectionPool) -> AsyncIterator[bool]:
    """True when no other sweep runs. A transaction's lock ends with it whatever happens, so it never
    goes back into the pool still held; idle in that transaction, with no snapshot and no
    transaction id, the connection holds back no vacuum."""
    async with pool.connection() as conn, conn.transaction():
        row = await (await conn.execute("SELECT pg_try_advisory_xact_lock(%s, 0)", (SWEEPER_LOCKS,))).fetchone()
        yield bool(row and row[0])
