"""New versions of stored objects (a correction, a lossless compression): each instance row moves to
its new blob in the caller's transaction, unless it no longer names the version that was
rewritten (replaced or deleted meanwhile); the change feed records each move as an update."""

from __future__ import annotations

from dataclasses import dataclass

from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from archive.index.blob_removals import queue_removals
from archive.index.instance_state import served
from archive.index.instances import bump_series
from archive.index.locks import lock_study


@dataclass(frozen=True)
class NewVersion:
    sop_uid: str
    old_key: str
    new_key: str
    sha256: str
    size: int
    transfer_syntax: str | None = None  # when the new version is in another transfer syntax


async def move_to_versions(conn: AsyncConnection, tenant: str, versions: list[NewVersion]) -> list[tuple[str, str, str | None]]:
    """(sop uid, series uid, old transcoded key) of the rows moved: those still naming the version
    that was rewritten. A transcoded copy holds the old header, so it goes too (the study workflow
    makes a new one)."""
    sops, old_keys = [v.sop_uid for v in versions], [v.old_key for v in versions]
    held = await (
        await conn.execute(
            """SELECT i.sop_uid, i.series_uid, i.transcoded_key FROM instance i
               JOIN unnest(%s::text[], %s::text[]) AS v(sop_uid, old_key) ON v.sop_uid = i.sop_uid AND v.old_key = i.blob_key
               WHERE i.tenant = %s ORDER BY i.sop_uid FOR UPDATE OF i""",
            (sops, old_keys, tenant),
        )
    ).fetchall()
    still = {row[0] for row in held}
    moving = [v for v in versions if v.sop_uid in still]
    await conn.execute(
        f"""WITH v AS (SELECT * FROM unnest(%s::text[], %s::text[], %s::text[], %s::bigint[], %s::text[])
                          AS v(sop_uid, new_key, sha256, size, syntax)),
                u AS (UPDATE instance i SET blob_key = v.new_key, sha256 = v.sha256, size = v.size,
                          transfer_syntax = coalesce(v.syntax, i.transfer_syntax), transcoded_key = NULL, transcoded_syntax = NULL,
                          tier = 'hot'
                      FROM v WHERE i.tenant = %s AND i.sop_uid = v.sop_uid
                      RETURNING i.tenant, i.study_uid, i.series_uid, i.sop_uid, i.sop_class_uid, i.state)
           INSERT INTO change_feed (tenant, action, study_uid, series_uid, sop_uid, sop_class_uid)
           SELECT tenant, 'update', study_uid, series_uid, sop_uid, sop_class_uid FROM u WHERE {served()}""",
        (
            [v.sop_uid for v in moving],
            [v.new_key for v in moving],
            [v.sha256 for v in moving],
            [v.size for v in moving],
            [v.transfer_syntax for v in moving],
            tenant,
        ),
    )
    return [(row[0], row[1], row[2]) for row in held]


async def switch_versions(pool: AsyncConnectionPool, tenant: str, study_uid: str, versions: list[NewVersion]) -> list[str]:
    """A study's rows moved to their new versions in one transaction (its lock held exclusively, so
    no receipt or DELETE interleaves); the blob keys no row names any more, to remove after it."""
    async with pool.connection() as conn, conn.transaction():
        await lock_study(conn, tenant, study_uid, exclusive=True)
        moved = await move_to_versions(conn, tenant, versions)
        await bump_series(conn, tenant, sorted({series for _, series, _ in moved}))
        kept = {sop for sop, _, _ in moved}
        gone = [v.old_key if v.sop_uid in kept else v.new_key for v in versions] + [t for _, _, t in moved if t]
        await queue_removals(conn, gone, "superseded")
    return gone
