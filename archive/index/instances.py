"""Writes at receipt: the instance row and its patient, study and series parents, in one transaction."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from archive.dicom.attributes import InstanceAttributes
from archive.dicom.rejection_note import REJECTED_OBJECT, RejectionRefused, rejected_again


@dataclass(frozen=True)
class StoredInstance:
    sop_uid: str
    blob_key: str
    sha256: str
    size: int
    state: str
    study_uid: str
    series_uid: str
    transcoded_key: str | None


async def find_instance(conn: AsyncConnection, tenant: str, sop_uid: str, *, lock: bool = False) -> StoredInstance | None:
    sql = (
        "SELECT sop_uid, blob_key, sha256, size, state, study_uid, series_uid, transcoded_key FROM instance"
        " WHERE tenant = %s AND sop_uid = %s"
    )
    row = await (await conn.execute(sql + (" FOR UPDATE" if lock else ""), (tenant, sop_uid))).fetchone()
    return StoredInstance(*row) if row else None


async def bump_series(conn: AsyncConnection, tenant: str, series_uids: list[str]) -> None:
    """A new version for series whose instances changed: what WADO-RS metadata and its ETag follow.
    Called last in a receipt's transaction, so the row lock is held for its commit, not its fsync."""
    if not series_uids:
        return
    await conn.execute(
        "UPDATE series SET version = nextval('series_version_seq') WHERE tenant = %s AND series_uid = ANY(%s)",
        (tenant, series_uids),
    )


async def point_at_blob(conn: AsyncConnection, tenant: str, sop_uid: str, blob_key: str) -> None:
    await conn.execute("UPDATE instance SET blob_key = %s WHERE tenant = %s AND sop_uid = %s", (blob_key, tenant, sop_uid))


async def reset_failed(conn: AsyncConnection, tenant: str, study_uid: str, sop_uid: str) -> bool:
    """A failed instance whose bytes were sent again goes through its workflow again."""
    reset = await (
        await conn.execute(
            """UPDATE instance SET state = 'received', failure_reason = NULL, signalled = false, committed_at = NULL
           WHERE tenant = %s AND sop_uid = %s AND state = 'failed' RETURNING 1""",
            (tenant, sop_uid),
        )
    ).fetchone()
    if reset:
        await conn.execute(
            "UPDATE study SET state = 'receiving' WHERE tenant = %s AND study_uid = %s AND state <> 'receiving'",
            (tenant, study_uid),
        )
    return reset is not None


_PARENTS = """
    t AS (INSERT INTO tenant (name) VALUES (%(tenant)s) ON CONFLICT DO NOTHING),
    p AS (INSERT INTO patient (tenant, patient_id, issuer, patient_name, birth_date, sex)
          VALUES (%(tenant)s, %(patient_id)s, %(issuer)s, %(patient_name)s, %(patient_birth_date)s, %(patient_sex)s)
          ON CONFLICT DO NOTHING),
    s AS (INSERT INTO study (tenant, study_uid, patient_id, issuer, patient_name, patient_birth_date, patient_sex,
              study_date, study_time, accession_number, study_id, referring_physician, study_description)
          VALUES (%(tenant)s, %(study_uid)s, %(patient_id)s, %(issuer)s, %(patient_name)s, %(patient_birth_date)s,
              %(patient_sex)s, %(study_date)s, %(study_time)s, %(accession_number)s, %(study_id)s,
              %(referring_physician)s, %(study_description)s)
          ON CONFLICT DO NOTHING),
    se AS (INSERT INTO series (tenant, series_uid, study_uid, modality, series_number, series_description,
               body_part, series_date, series_time)
           VALUES (%(tenant)s, %(series_uid)s, %(study_uid)s, %(modality)s, %(series_number)s,
               %(series_description)s, %(body_part)s, %(series_date)s, %(series_time)s)
           ON CONFLICT DO NOTHING)
"""
_REOPEN = """UPDATE study SET state = 'receiving'
          WHERE tenant = %(tenant)s AND study_uid = %(study_uid)s AND state <> 'receiving'"""
# the change feed's row, in the statement that makes the change (archive/index/change_feed.py)
_FEED = """INSERT INTO change_feed (tenant, action, study_uid, series_uid, sop_uid, sop_class_uid)
          SELECT %(tenant)s, '{action}', %(study_uid)s, %(series_uid)s, %(sop_uid)s, %(sop_class_uid)s"""
# One round trip per instance: the parents are upserted in the same statement (DO NOTHING keeps
# concurrent receipts of one study from queueing on its row; the workflow's index step refreshes
# study and series attributes). A study that was ready flips back to 'receiving', so queries count
# it live until its workflow is done again; only for a row that went in: a resent duplicate starts
# no workflow, so it must not reopen a study nothing would close again.
_INSERT = (
    "WITH"
    + _PARENTS
    + """,
    i AS (INSERT INTO instance (tenant, sop_uid, series_uid, study_uid, sop_class_uid, instance_number,
            transfer_syntax, number_of_frames, rows, columns, bits_allocated, blob_key, size, sha256, source)
          VALUES (%(tenant)s, %(sop_uid)s, %(series_uid)s, %(study_uid)s, %(sop_class_uid)s, %(instance_number)s,
            %(transfer_syntax)s, %(number_of_frames)s, %(rows)s, %(columns)s, %(bits_allocated)s, %(blob_key)s,
            %(size)s, %(sha256)s, %(source)s)
          ON CONFLICT DO NOTHING RETURNING 1),
    r AS ("""
    + _REOPEN
    + """ AND EXISTS (SELECT 1 FROM i)),
    f AS ("""
    + _FEED.format(action="create")
    + """ WHERE EXISTS (SELECT 1 FROM i))
    SELECT (SELECT r.code FROM rejection r WHERE r.tenant = %(tenant)s AND r.sop_uid = %(sop_uid)s
                AND r.restored_at IS NULL)
    FROM i"""
)
_REPLACE = (
    "WITH"
    + _PARENTS
    + ", r AS ("
    + _REOPEN
    + "), f AS ("
    + _FEED.format(action="update")
    + """)
    UPDATE instance SET series_uid = %(series_uid)s, study_uid = %(study_uid)s, sop_class_uid = %(sop_class_uid)s,
        instance_number = %(instance_number)s, transfer_syntax = %(transfer_syntax)s,
        number_of_frames = %(number_of_frames)s, rows = %(rows)s, columns = %(columns)s,
        bits_allocated = %(bits_allocated)s, blob_key = %(blob_key)s, size = %(size)s, sha256 = %(sha256)s,
        source = %(source)s, state = 'received', failure_reason = NULL, signalled = false, received_at = now(),
        committed_at = NULL, transcoded_key = NULL, transcoded_syntax = NULL, nonconformance = NULL, tier = 'hot'
    WHERE tenant = %(tenant)s AND sop_uid = %(sop_uid)s"""
)


def _values(tenant: str, a: InstanceAttributes, **fields: object) -> dict[str, object]:
    return {**asdict(a), "tenant": tenant, **fields}


async def insert_instance(
    conn: AsyncConnection,
    tenant: str,
    a: InstanceAttributes,
    *,
    transfer_syntax: str,
    blob_key: str,
    size: int,
    sha256: str,
    source: str,
) -> bool:
    """Insert the row; False when another receipt inserted the same SOP Instance UID first. The answer
    is fetched (not a row count), so this works in a pipeline too. RejectionRefused for an instance
    an IOCM rejection withdrew and deleted since: the caller's transaction must roll back."""
    cursor = await conn.execute(
        _INSERT, _values(tenant, a, transfer_syntax=transfer_syntax, blob_key=blob_key, size=size, sha256=sha256, source=source)
    )
    row = await cursor.fetchone()
    if row is not None and row[0] is not None:
        raise RejectionRefused(REJECTED_OBJECT, rejected_again(str(row[0])))
    return row is not None


async def replace_instance(
    conn: AsyncConnection,
    tenant: str,
    a: InstanceAttributes,
    *,
    transfer_syntax: str,
    blob_key: str,
    size: int,
    sha256: str,
    source: str,
) -> None:
    await conn.execute(
        _REPLACE, _values(tenant, a, transfer_syntax=transfer_syntax, blob_key=blob_key, size=size, sha256=sha256, source=source)
    )


async def mark_signalled(pool: AsyncConnectionPool, tenant: str, sop_uids: list[str]) -> None:
    async with pool.connection() as conn:
        await conn.execute(
            "UPDATE instance SET signalled = true WHERE tenant = %s AND sop_uid = ANY(%s) AND NOT signalled",
            (tenant, sop_uids),
        )


async def unsignalled_studies(
    pool: AsyncConnectionPool, older_than_seconds: float, limit: int = 500
) -> list[tuple[str, str, str | None, list[str]]]:
    """Studies with instances whose workflow never acknowledged them: (tenant, study, modality, sop uids)."""
    async with pool.connection() as conn:
        rows = await (
            await conn.execute(
                """SELECT i.tenant, i.study_uid, min(s.modality), array_agg(i.sop_uid)
               FROM instance i JOIN series s ON s.tenant = i.tenant AND s.series_uid = i.series_uid
               WHERE NOT i.signalled AND i.received_at < now() - make_interval(secs => %s)
               GROUP BY i.tenant, i.study_uid LIMIT %s""",
                (older_than_seconds, limit),
            )
        ).fetchall()
    return [(r[0], r[1], r[2], list(r[3])) for r in rows]


async def stalled_studies(
    pool: AsyncConnectionPool, older_than_seconds: float, limit: int = 100
) -> list[tuple[str, str, str | None, int]]:
    """Studies with instances signalled long ago yet still unprocessed: (tenant, study, modality, count),
    oldest first. Their workflow may simply be busy; the caller asks Temporal before re-driving them."""
    async with pool.connection() as conn:
        rows = await (
            await conn.execute(
                """SELECT i.tenant, i.study_uid, min(s.modality), count(*)
               FROM instance i JOIN series s ON s.tenant = i.tenant AND s.series_uid = i.series_uid
               WHERE i.state = 'received' AND i.signalled AND i.received_at < now() - make_interval(secs => %s)
               GROUP BY i.tenant, i.study_uid ORDER BY min(i.received_at) LIMIT %s""",
                (older_than_seconds, limit),
            )
        ).fetchall()
    return [(r[0], r[1], r[2], r[3]) for r in rows]


async def mark_nonconformant(conn: AsyncConnection, tenant: str, sop_uid: str, note: str) -> None:
    """Stored although it breaks the standard harmlessly (uid_policy lenient): say so on its row."""
    await conn.execute("UPDATE instance SET nonconformance = %s WHERE tenant = %s AND sop_uid = %s", (note, tenant, sop_uid))
