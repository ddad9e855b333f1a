"""What a tenant stores: bytes of its objects as stored (uncompressed copies made for retrieval not
counted). `/metrics` reads the same per tenant (archive/index/metrics.py)."""

from __future__ import annotations

from psycopg_pool import AsyncConnectionPool


async def stored_bytes(pool: AsyncConnectionPool, tenant: str) -> int:
    async with pool.connection() as conn:
        row = await (await conn.execute("SELECT coalesce(sum(size), 0) FROM instance WHERE tenant = %s", (tenant,))).fetchone()
    return int(row[0]) if row else 0
