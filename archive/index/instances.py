"""Writes at receipt: the instance row and its patient, study and series parents, in one transaction."""

from __future__ import annotations

from dataclasses import dataclass

from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from archive.attributes import InstanceAttributes


@dataclass(frozen=True)
class StoredInstance:
    sop_uid: str
    blob_key: str
    sha256: str
    size: int
    state: str


async def find_instance(conn: AsyncConnection, tenant: str, sop_uid: str, *, lock: bool = False) -> StoredInstance | None:
    sql = "SELECT sop_uid, blob_key, sha256, size, state FROM instance WHERE tenant = %s AND sop_uid = %s"
    row = await (await conn.execute(sql + (" FOR UPDATE" if lock else ""), (tenant, sop_uid))).fetchone()
    return StoredInstance(*row) if row else None


async def _upsert_parents(conn: AsyncConnection, tenant: str, a: InstanceAttributes) -> None:
    # DO NOTHING keeps concurrent receipts of one study from queueing on its row; the workflow's
    # index step refreshes study and series attributes afterwards.
    await conn.execute("INSERT INTO tenant (name) VALUES (%s) ON CONFLICT DO NOTHING", (tenant,))
    await conn.execute(
        "INSERT INTO patient (tenant, patient_id, issuer, patient_name, birth_date, sex) VALUES (%s,%s,%s,%s,%s,%s)"
        " ON CONFLICT DO NOTHING",
        (tenant, a.patient_id, a.issuer, a.patient_name, a.patient_birth_date, a.patient_sex),
    )
    await conn.execute(
        """INSERT INTO study (tenant, study_uid, patient_id, issuer, patient_name, patient_birth_date, patient_sex,
               study_date, study_time, accession_number, study_id, referring_physician, study_description)
           VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s) ON CONFLICT DO NOTHING""",
        (tenant, a.study_uid, a.patient_id, a.issuer, a.patient_name, a.patient_birth_date, a.patient_sex,
         a.study_date, a.study_time, a.accession_number, a.study_id, a.referring_physician, a.study_description),
    )
    # a study that was ready is arriving again: queries count it live until the workflow is done
    await conn.execute(
        "UPDATE study SET state = 'receiving' WHERE tenant = %s AND study_uid = %s AND state <> 'receiving'",
        (tenant, a.study_uid),
    )
    await conn.execute(
        """INSERT INTO series (tenant, series_uid, study_uid, modality, series_number, series_description,
               body_part, series_date, series_time)
           VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s) ON CONFLICT DO NOTHING""",
        (tenant, a.series_uid, a.study_uid, a.modality, a.series_number, a.series_description,
         a.body_part, a.series_date, a.series_time),
    )


async def insert_instance(
    conn: AsyncConnection, tenant: str, a: InstanceAttributes, *, transfer_syntax: str,
    blob_key: str, size: int, sha256: str, source: str,
) -> bool:
    """Insert the row; False when another receipt inserted the same SOP Instance UID first."""
    await _upsert_parents(conn, tenant, a)
    cursor = await conn.execute(
        """INSERT INTO instance (tenant, sop_uid, series_uid, study_uid, sop_class_uid, instance_number,
               transfer_syntax, number_of_frames, rows, columns, bits_allocated, blob_key, size, sha256, source)
           VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s) ON CONFLICT DO NOTHING""",
        (tenant, a.sop_uid, a.series_uid, a.study_uid, a.sop_class_uid, a.instance_number, transfer_syntax,
         a.number_of_frames, a.rows, a.columns, a.bits_allocated, blob_key, size, sha256, source),
    )
    return cursor.rowcount == 1


async def replace_instance(
    conn: AsyncConnection, tenant: str, a: InstanceAttributes, *, transfer_syntax: str,
    blob_key: str, size: int, sha256: str, source: str,
) -> None:
    await _upsert_parents(conn, tenant, a)
    await conn.execute(
        """UPDATE instance SET series_uid=%s, study_uid=%s, sop_class_uid=%s, instance_number=%s,
               transfer_syntax=%s, number_of_frames=%s, rows=%s, columns=%s, bits_allocated=%s, blob_key=%s,
               size=%s, sha256=%s, source=%s, state='received', failure_reason=NULL, signalled=false,
               received_at=now(), committed_at=NULL
           WHERE tenant=%s AND sop_uid=%s""",
        (a.series_uid, a.study_uid, a.sop_class_uid, a.instance_number, transfer_syntax, a.number_of_frames,
         a.rows, a.columns, a.bits_allocated, blob_key, size, sha256, source, tenant, a.sop_uid),
    )


async def mark_signalled(pool: AsyncConnectionPool, tenant: str, sop_uids: list[str]) -> None:
    async with pool.connection() as conn:
        await conn.execute(
            "UPDATE instance SET signalled = true WHERE tenant = %s AND sop_uid = ANY(%s) AND NOT signalled",
            (tenant, sop_uids),
        )


async def unsignalled_studies(pool: AsyncConnectionPool, older_than_seconds: float, limit: int = 500) -> list[tuple[str, str, str | None, list[str]]]:
    """Studies with instances whose workflow never acknowledged them: (tenant, study, modality, sop uids)."""
    async with pool.connection() as conn:
        rows = await (await conn.execute(
            """SELECT i.tenant, i.study_uid, min(s.modality), array_agg(i.sop_uid)
               FROM instance i JOIN series s ON s.tenant = i.tenant AND s.series_uid = i.series_uid
               WHERE NOT i.signalled AND i.received_at < now() - make_interval(secs => %s)
               GROUP BY i.tenant, i.study_uid LIMIT %s""",
            (older_than_seconds, limit),
        )).fetchall()
    return [(r[0], r[1], r[2], list(r[3])) for r in rows]
