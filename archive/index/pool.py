"""The psycopg 3 connection pool, with the schema brought up to date on open."""

from __future__ import annotations

from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from archive.index.schema import migrate


async def open_index_pool(dsn: str, *, min_size: int = 1, max_size: int = 10, run_migrations: bool = True) -> AsyncConnectionPool:
    if run_migrations:
        async with await AsyncConnection.connect(dsn, autocommit=True) as conn:
            await migrate(conn)
    pool = AsyncConnectionPool(dsn, min_size=min_size, max_size=max_size, open=False, kwargs={"autocommit": True})
    await pool.open(wait=True, timeout=30)
    return pool
