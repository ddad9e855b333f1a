"""Studies on hold (legal or clinical): no lifecycle rule deletes them, whatever their age."""

from __future__ import annotations

from datetime import datetime

from psycopg_pool import AsyncConnectionPool


async def hold(pool: AsyncConnectionPool, tenant: str, study_uid: str, reason: str, by: str) -> bool:
    """Put a study on hold; False when it already was."""
    async with pool.connection() as conn:
        row = await (
            await conn.execute(
                """INSERT INTO study_hold (tenant, study_uid, reason, held_by) VALUES (%s, %s, %s, %s)
                   ON CONFLICT DO NOTHING RETURNING 1""",
                (tenant, study_uid, reason, by),
            )
        ).fetchone()
    return row is not None


async def release(pool: AsyncConnectionPool, tenant: str, study_uid: str) -> bool:
    async with pool.connection() as conn:
        cursor = await conn.execute("DELETE FROM study_hold WHERE tenant = %s AND study_uid = %s", (tenant, study_uid))
    return cursor.rowcount > 0


async def holds(pool: AsyncConnectionPool, tenant: str | None) -> list[tuple[str, str, str, str, datetime]]:
    """(tenant, study, reason, by, since) of every hold, oldest first."""
    async with pool.connection() as conn:
        rows = await (
            await conn.execute(
                "SELECT tenant, study_uid, reason, held_by, held_at FROM study_hold"
                " WHERE %s::text IS NULL OR tenant = %s ORDER BY held_at",
                (tenant, tenant),
            )
        ).fetchall()
    return [(r[0], r[1], r[2], r[3], r[4]) for r in rows]
