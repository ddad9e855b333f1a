"""IOCM rejection in the index: a rejection note's instances leave every read path in the note's own
receipt transaction, stay restorable for `rejected_retention_days`, and are then deleted.

A rejected instance keeps its row (state 'rejected', which archive.index.instance_state.served
leaves out of every query, count and retrieve) and gains a `rejection` row naming the note, the
code and the state it had. The `rejection` row outlives the instance, so a re-send of an expired
instance is refused too, unless an admin restored it first.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from archive.dicom.rejection_note import (
    CLASS_INSTANCE_CONFLICT,
    NO_SUCH_INSTANCE,
    RETENTION_EXPIRED,
    RejectionNote,
    RejectionRefused,
)
from archive.index.instances import bump_series
from archive.index.locks import lock_study

MAX_LISTED = 5  # UIDs named in a refusal's reason


@dataclass(frozen=True)
class Rejected:
    sop_uid: str
    study_uid: str
    series_uid: str
    code: str
    note_uid: str
    rejected_at: datetime
    restored_at: datetime | None
    deleted_at: datetime | None


_APPLY = """
WITH r AS (
    INSERT INTO rejection (tenant, sop_uid, study_uid, series_uid, sop_class_uid, code, note_uid, prior_state)
    SELECT tenant, sop_uid, study_uid, series_uid, sop_class_uid, %(code)s, %(note)s, state FROM instance
    WHERE tenant = %(tenant)s AND sop_uid = ANY(%(sops)s) AND state <> 'rejected'
    ON CONFLICT (tenant, sop_uid) DO UPDATE SET code = EXCLUDED.code, note_uid = EXCLUDED.note_uid,
        prior_state = EXCLUDED.prior_state, rejected_at = now(), restored_at = NULL, deleted_at = NULL
    RETURNING sop_uid
), u AS (
    UPDATE instance SET state = 'rejected' WHERE tenant = %(tenant)s AND sop_uid IN (SELECT sop_uid FROM r)
    RETURNING tenant, study_uid, series_uid, sop_uid, sop_class_uid
), f AS (
    INSERT INTO change_feed (tenant, action, study_uid, series_uid, sop_uid, sop_class_uid)
    SELECT tenant, 'delete', study_uid, series_uid, sop_uid, sop_class_uid FROM u
)
SELECT DISTINCT series_uid FROM u
"""


async def apply_rejection(conn: AsyncConnection, tenant: str, note_uid: str, note_study: str, note: RejectionNote) -> int:
    """Reject what `note` names, inside the receipt transaction of the note (its study locked);
    how many instances it withdrew now. RejectionRefused when it names anything it cannot reject."""
    await _check_references(conn, tenant, note_study, note)
    sops = sorted({ref.sop_uid for ref in note.refs})
    rows = await (await conn.execute(_APPLY, {"tenant": tenant, "note": note_uid, "code": note.code, "sops": sops})).fetchall()
    await bump_series(conn, tenant, sorted(row[0] for row in rows))
    count = await (
        await conn.execute("SELECT count(*) FROM rejection WHERE tenant = %s AND note_uid = %s", (tenant, note_uid))
    ).fetchone()
    return int(count[0]) if count else 0


async def _check_references(conn: AsyncConnection, tenant: str, note_study: str, note: RejectionNote) -> None:
    elsewhere = sorted({ref.study_uid for ref in note.refs if ref.study_uid != note_study})
    if elsewhere:
        raise RejectionRefused(
            NO_SUCH_INSTANCE, f"a rejection note rejects instances of its own study only; it names study {elsewhere[0]}"
        )
    stored = {
        row[0]: (row[1], row[2])
        for row in await (
            await conn.execute(
                "SELECT sop_uid, series_uid, sop_class_uid FROM instance WHERE tenant = %s AND study_uid = %s"
                " AND sop_uid = ANY(%s) ORDER BY sop_uid FOR UPDATE",
                (tenant, note_study, [ref.sop_uid for ref in note.refs]),
            )
        ).fetchall()
    }
    missing = [ref.sop_uid for ref in note.refs if ref.sop_uid not in stored]
    if missing:
        raise RejectionRefused(NO_SUCH_INSTANCE, f"no such instance in the study: {', '.join(missing[:MAX_LISTED])}")
    conflicting = [ref.sop_uid for ref in note.refs if stored[ref.sop_uid] != (ref.series_uid, ref.sop_class_uid)]
    if conflicting:
        raise RejectionRefused(
            CLASS_INSTANCE_CONFLICT,
            f"series or SOP class not as stored: {', '.join(conflicting[:MAX_LISTED])}",
        )


async def rejected_before(conn: AsyncConnection, tenant: str, sop_uid: str) -> str | None:
    """The rejection code under which `sop_uid` was withdrawn and not restored, if it was."""
    row = await (
        await conn.execute(
            "SELECT code FROM rejection WHERE tenant = %s AND sop_uid = %s AND restored_at IS NULL", (tenant, sop_uid)
        )
    ).fetchone()
    return str(row[0]) if row else None


async def list_rejected(
    pool: AsyncConnectionPool, tenants: list[str] | None, study_uid: str | None = None, limit: int = 1000
) -> list[tuple[str, Rejected]]:
    """(tenant, rejection) of instances rejected and not restored, newest first; None: every tenant."""
    async with pool.connection() as conn:
        rows = await (
            await conn.execute(
                """SELECT tenant, sop_uid, study_uid, series_uid, code, note_uid, rejected_at, restored_at, deleted_at
                   FROM rejection WHERE restored_at IS NULL AND (%s::text[] IS NULL OR tenant = ANY(%s))
                     AND (%s::text IS NULL OR study_uid = %s)
                   ORDER BY rejected_at DESC, sop_uid LIMIT %s""",
                (tenants, tenants, study_uid, study_uid, limit),
            )
        ).fetchall()
    return [(row[0], Rejected(*row[1:])) for row in rows]


async def restore(pool: AsyncConnectionPool, tenant: str, study_uid: str, sop_uids: list[str] | None) -> list[str]:
    """Revoke the rejection of instances of a study (all of them when `sop_uids` is None) that are
    still held; the SOP Instance UIDs restored. They go through the study workflow again (state
    'received', not yet signalled), which re-counts the study and rewrites its documents."""
    async with pool.connection() as conn, conn.transaction():
        rows = await (
            await conn.execute(
                """WITH r AS (
                       UPDATE rejection SET restored_at = now()
                       WHERE tenant = %(tenant)s AND study_uid = %(study)s AND restored_at IS NULL AND deleted_at IS NULL
                         AND (%(sops)s::text[] IS NULL OR sop_uid = ANY(%(sops)s))
                       RETURNING sop_uid
                   ), u AS (
                       UPDATE instance SET state = 'received', signalled = false, committed_at = NULL
                       WHERE tenant = %(tenant)s AND state = 'rejected' AND sop_uid IN (SELECT sop_uid FROM r)
                       RETURNING tenant, study_uid, series_uid, sop_uid, sop_class_uid
                   ), f AS (
                       INSERT INTO change_feed (tenant, action, study_uid, series_uid, sop_uid, sop_class_uid)
                       SELECT tenant, 'create', study_uid, series_uid, sop_uid, sop_class_uid FROM u
                   ), s AS (
                       UPDATE study SET state = 'receiving' WHERE tenant = %(tenant)s AND study_uid = %(study)s
                         AND EXISTS (SELECT 1 FROM u)
                   )
                   SELECT sop_uid, series_uid FROM u""",
                {"tenant": tenant, "study": study_uid, "sops": sop_uids},
            )
        ).fetchall()
        await bump_series(conn, tenant, sorted({row[1] for row in rows}))
    return [row[0] for row in rows]


async def due_for_deletion(
    pool: AsyncConnectionPool, as_of: datetime, retention_days: float, limit: int = 500
) -> list[tuple[str, str, list[str]]]:
    """(tenant, study, SOP Instance UIDs) whose rejection has expired at `as_of`; 113039 (Data
    Retention Policy Expired) at once, the others after `retention_days`."""
    async with pool.connection() as conn:
        rows = await (
            await conn.execute(
                """SELECT tenant, study_uid, array_agg(sop_uid ORDER BY sop_uid) FROM rejection
                   WHERE restored_at IS NULL AND deleted_at IS NULL
                     AND (code = %s OR rejected_at <= %s - make_interval(secs => %s))
                   GROUP BY tenant, study_uid ORDER BY min(rejected_at) LIMIT %s""",
                (RETENTION_EXPIRED, as_of, retention_days * 86400.0, limit),
            )
        ).fetchall()
    return [(row[0], row[1], list(row[2])) for row in rows]


async def reject_for_retention(pool: AsyncConnectionPool, tenant: str, study_uid: str, note: str) -> list[str]:
    """A lifecycle rule's retention: every instance of the study rejected as 113039 (Data Retention
    Policy Expired) under `note`, as if a rejection note had said so; the SOP Instance UIDs, for
    the caller to delete at once. Nothing when the study went on hold meanwhile."""
    async with pool.connection() as conn, conn.transaction():
        await lock_study(conn, tenant, study_uid, exclusive=True)
        held = await (
            await conn.execute("SELECT 1 FROM study_hold WHERE tenant = %s AND study_uid = %s", (tenant, study_uid))
        ).fetchone()
        if held:
            return []
        sops = [
            row[0]
            for row in await (
                await conn.execute(
                    "SELECT sop_uid FROM instance WHERE tenant = %s AND study_uid = %s ORDER BY sop_uid FOR UPDATE",
                    (tenant, study_uid),
                )
            ).fetchall()
        ]
        rows = await (
            await conn.execute(_APPLY, {"tenant": tenant, "note": note, "code": RETENTION_EXPIRED, "sops": sops})
        ).fetchall()
        await bump_series(conn, tenant, sorted(row[0] for row in rows))
    return sops
