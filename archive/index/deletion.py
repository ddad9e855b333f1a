"""Deleting a study, series or instance from the index; the caller then removes the blobs."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from archive.audit import AuditEvent, record_in
from archive.index.blob_removals import queue_removals
from archive.index.instances import bump_series
from archive.index.locks import lock_study
from archive.index.scope import instance_scope


@dataclass
class Deleted:
    instances: int = 0
    blob_keys: list[str] = field(default_factory=list)


async def delete_objects(
    pool: AsyncConnectionPool, tenant: str, study_uid: str, series_uid: str | None = None, sop_uid: str | None = None
) -> Deleted:
    """Rows go first and in one transaction: a crash after it leaves orphan blobs, never rows without blobs.
    The study's lock waits for receipts in flight, so every instance acknowledged before is seen here."""
    where, params = instance_scope(tenant, study_uid, series_uid, sop_uid)
    async with pool.connection() as conn, conn.transaction():
        out, per_series = await _delete_rows(conn, tenant, study_uid, where, params, visible=True)
        await _uncount(conn, tenant, study_uid, per_series)
        if out.instances:  # same transaction: the deletion and the note that its workflow must hear of it
            await conn.execute(
                """INSERT INTO deletion_outbox (tenant, study_uid, instances) VALUES (%s, %s, %s)
                   ON CONFLICT (tenant, study_uid) DO UPDATE SET instances = deletion_outbox.instances + EXCLUDED.instances""",
                (tenant, study_uid, out.instances),
            )
    return out


async def delete_rejected(
    pool: AsyncConnectionPool, tenant: str, study_uid: str, sop_uids: list[str], audited: Callable[[int], AuditEvent]
) -> Deleted:
    """Rejected instances whose rejection expired (archive/index/rejections.py). They left the feed,
    the counts and the documents when they were rejected, so only their rows and blobs go now; the
    rejection rows stay, marked deleted, so a re-send is still refused. `audited(instances)` is the
    trail's event, written in the same transaction: a process killed after the commit cannot leave
    a deletion unrecorded, and a re-run that finds nothing left records nothing."""
    where, params = instance_scope(tenant, study_uid)
    async with pool.connection() as conn, conn.transaction():
        out, _ = await _delete_rows(
            conn, tenant, study_uid, f"{where} AND state = 'rejected' AND sop_uid = ANY(%s)", [*params, sop_uids], visible=False
        )
        await conn.execute(
            "UPDATE rejection SET deleted_at = now() WHERE tenant = %s AND sop_uid = ANY(%s) AND restored_at IS NULL",
            (tenant, sop_uids),
        )
        if out.instances:
            await record_in(conn, audited(out.instances))
    return out


async def _delete_rows(
    conn: AsyncConnection, tenant: str, study_uid: str, where: str, params: Sequence[object], *, visible: bool
) -> tuple[Deleted, Counter[str]]:
    """The instance rows matching `where`, and the series and study they leave empty. Rows readers
    still saw (`visible`) leave a change feed entry and move their series' version."""
    await lock_study(conn, tenant, study_uid, exclusive=True)
    # study row before series rows, the order refresh_aggregates takes them in
    await conn.execute("SELECT 1 FROM study WHERE tenant = %s AND study_uid = %s FOR UPDATE", (tenant, study_uid))
    # the change feed's rows in the same statement (archive/index/change_feed.py)
    rows = await (
        await conn.execute(
            f"""WITH d AS (DELETE FROM instance WHERE {where}
                           RETURNING blob_key, transcoded_key, series_uid, tenant, study_uid, sop_uid, sop_class_uid),
                     f AS (INSERT INTO change_feed (tenant, action, study_uid, series_uid, sop_uid, sop_class_uid)
                           SELECT tenant, 'delete', study_uid, series_uid, sop_uid, sop_class_uid FROM d WHERE {visible})
                SELECT blob_key, transcoded_key, series_uid FROM d""",
            params,
        )
    ).fetchall()
    out = Deleted(len(rows), [k for row in rows for k in row[:2] if k])
    if visible:
        await bump_series(conn, tenant, sorted({row[2] for row in rows}))
    out.blob_keys += await _drop_empty_parents(conn, tenant, study_uid)
    await queue_removals(conn, out.blob_keys, "deleted")
    return out, Counter(row[2] for row in rows)


async def _uncount(conn: AsyncConnection, tenant: str, study_uid: str, per_series: Counter[str]) -> None:
    """The counts a ready study answers QIDO and C-FIND from lose what went now, not when its
    workflow next recomputes them."""
    if not per_series:
        return
    await conn.execute(
        """UPDATE series se SET num_instances = greatest(se.num_instances - d.n, 0)
           FROM unnest(%s::text[], %s::int[]) AS d(uid, n) WHERE se.tenant = %s AND se.series_uid = d.uid""",
        (list(per_series), list(per_series.values()), tenant),
    )
    await conn.execute(
        """UPDATE study st SET num_instances = greatest(st.num_instances - %s, 0),
               num_series = (SELECT count(*) FROM series se WHERE se.tenant = st.tenant AND se.study_uid = st.study_uid)
           WHERE st.tenant = %s AND st.study_uid = %s""",
        (sum(per_series.values()), tenant, study_uid),
    )


async def _drop_empty_parents(conn: AsyncConnection, tenant: str, study_uid: str) -> list[str]:
    """Series left without instances, and the study if no series is left; their metadata blobs."""
    emptied = await (
        await conn.execute(
            """DELETE FROM series se WHERE se.tenant = %s AND se.study_uid = %s
             AND NOT EXISTS (SELECT 1 FROM instance i WHERE i.tenant = se.tenant AND i.series_uid = se.series_uid)
           RETURNING metadata_key""",
            (tenant, study_uid),
        )
    ).fetchall()
    await conn.execute(
        """DELETE FROM study st WHERE st.tenant = %s AND st.study_uid = %s
             AND NOT EXISTS (SELECT 1 FROM series se WHERE se.tenant = st.tenant AND se.study_uid = st.study_uid)""",
        (tenant, study_uid),
    )
    return [r[0] for r in emptied if r[0]]


async def unsignalled_deletions(
    pool: AsyncConnectionPool, older_than_seconds: float = 0.0, limit: int = 500
) -> list[tuple[str, str, int]]:
    """(tenant, study, instances deleted) whose study workflow has not been told yet."""
    async with pool.connection() as conn:
        rows = await (
            await conn.execute(
                "SELECT tenant, study_uid, instances FROM deletion_outbox WHERE deleted_at < now() - make_interval(secs => %s)"
                " ORDER BY deleted_at LIMIT %s",
                (older_than_seconds, limit),
            )
        ).fetchall()
    return [(r[0], r[1], r[2]) for r in rows]


async def deletion_signalled(pool: AsyncConnectionPool, tenant: str, study_uid: str, instances: int) -> None:
    """The workflow has `instances` of the study's deletions; later ones stay in the outbox."""
    async with pool.connection() as conn, conn.transaction():
        await conn.execute(
            "UPDATE deletion_outbox SET instances = instances - %s WHERE tenant = %s AND study_uid = %s",
            (instances, tenant, study_uid),
        )
        await conn.execute(
            "DELETE FROM deletion_outbox WHERE tenant = %s AND study_uid = %s AND instances <= 0", (tenant, study_uid)
        )
