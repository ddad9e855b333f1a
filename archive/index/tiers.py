"""Which blob store holds each object (issue 30's tiering): the objects a `tier` rule still has to
move, marking them moved once their cold copy checked out, and the bytes each tenant keeps in
each tier (`dicomflow status`, `/metrics`)."""

from __future__ import annotations

from dataclasses import dataclass

from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from archive.index.instance_state import InstanceState


@dataclass(frozen=True)
class HotObject:
    sop_uid: str
    blob_key: str
    sha256: str
    size: int


async def hot_objects(pool: AsyncConnectionPool, tenant: str, study_uid: str) -> list[HotObject]:
    """The study's committed objects still in the hot store."""
    async with pool.connection() as conn:
        rows = await (
            await conn.execute(
                """SELECT sop_uid, blob_key, sha256, size FROM instance
                   WHERE tenant = %s AND study_uid = %s AND state = %s AND tier = 'hot' ORDER BY sop_uid""",
                (tenant, study_uid, InstanceState.COMMITTED.value),
            )
        ).fetchall()
    return [HotObject(*r) for r in rows]


async def mark_cold(pool: AsyncConnectionPool, tenant: str, moved: dict[str, str]) -> int:
    """sop uid -> blob key moved; a row whose key changed meanwhile (a correction's new version) stays hot."""
    if not moved:
        return 0
    async with pool.connection() as conn:
        cur = await conn.execute(
            """UPDATE instance i SET tier = 'cold' FROM unnest(%s::text[], %s::text[]) AS m(sop_uid, blob_key)
               WHERE i.tenant = %s AND i.sop_uid = m.sop_uid AND i.blob_key = m.blob_key""",
            (list(moved), list(moved.values()), tenant),
        )
        return cur.rowcount


async def bytes_by_tier(conn: AsyncConnection) -> list[tuple[str, str, int, int]]:
    """(tenant, tier, objects, bytes) of every tenant's stored objects."""
    rows = await (
        await conn.execute("SELECT tenant, tier, count(*), coalesce(sum(size), 0) FROM instance GROUP BY 1, 2 ORDER BY 1, 2")
    ).fetchall()
    return [(t, tier, int(n), int(b)) for t, tier, n, b in rows]


async def bytes_saved(conn: AsyncConnection) -> dict[str, int]:
    """tenant -> bytes lossless compression saved."""
    rows = await (await conn.execute("SELECT tenant, coalesce(sum(bytes_saved), 0) FROM lifecycle_done GROUP BY 1")).fetchall()
    return {t: int(b) for t, b in rows}
