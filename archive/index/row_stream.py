"""A query's rows a batch at a time from a server-side cursor: a C-FIND over 20,000 studies holds
one batch in memory, and the first answers leave before the last rows are read."""

from __future__ import annotations

from contextlib import AsyncExitStack
from typing import Any

from psycopg import AsyncServerCursor
from psycopg_pool import AsyncConnectionPool

STATEMENT_TIMEOUT_MS = 120_000  # one search may not hold a connection longer than this


class RowStream:
    def __init__(self, pool: AsyncConnectionPool, sql: str, params: list[Any], batch_size: int = 200) -> None:
        self.pool, self.sql, self.params, self.batch_size = pool, sql, params, batch_size
        self._stack = AsyncExitStack()
        self._cursor: AsyncServerCursor[tuple[Any, ...]] | None = None

    async def open(self) -> None:
        conn = await self._stack.enter_async_context(self.pool.connection())
        await self._stack.enter_async_context(conn.transaction())  # a named cursor lives in a transaction
        await conn.execute(f"SET LOCAL statement_timeout = {STATEMENT_TIMEOUT_MS}")
        self._cursor = conn.cursor(name="dicomflow_stream")
        await self._cursor.execute(self.sql, self.params)

    async def next_batch(self) -> list[tuple[Any, ...]]:
        assert self._cursor is not None, "open() first"
        return await self._cursor.fetchmany(self.batch_size)

    async def close(self) -> None:
        if self._cursor is not None:
            await self._cursor.close()
        await self._stack.aclose()
