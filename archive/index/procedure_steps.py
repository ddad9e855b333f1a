"""The performed_step table: MPPS as reported, and the worklist item each one performs."""

from __future__ import annotations

from typing import Any

from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from archive.services.mpps import WORKLIST_STATUS, PerformedStep


class StepExists(ValueError):
    pass


async def create(pool: AsyncConnectionPool, tenant: str, mpps_uid: str, step: PerformedStep) -> None:
    async with pool.connection() as conn, conn.transaction():
        cursor = await conn.execute(
            "INSERT INTO performed_step (tenant, mpps_uid, status, study_uid, accession_number, sps_id, modality,"
            " station_ae, item) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s::jsonb) ON CONFLICT DO NOTHING",
            (
                tenant,
                mpps_uid,
                step.status,
                step.study_uid,
                step.accession_number,
                step.sps_id,
                step.modality,
                step.station_ae,
                step.item,
            ),
        )
        if cursor.rowcount == 0:
            raise StepExists(mpps_uid)
        await _mark_worklist(conn, tenant, step)


async def load(pool: AsyncConnectionPool, tenant: str, mpps_uid: str) -> dict[str, Any] | None:
    """The stored step (DICOM JSON), or None."""
    async with pool.connection() as conn:
        row = await (
            await conn.execute("SELECT item FROM performed_step WHERE tenant = %s AND mpps_uid = %s", (tenant, mpps_uid))
        ).fetchone()
    return row[0] if row else None


async def update(pool: AsyncConnectionPool, tenant: str, mpps_uid: str, step: PerformedStep) -> None:
    async with pool.connection() as conn, conn.transaction():
        await conn.execute(
            "UPDATE performed_step SET status = %s, study_uid = %s, accession_number = %s, sps_id = %s, modality = %s,"
            " station_ae = %s, item = %s::jsonb, updated_at = now() WHERE tenant = %s AND mpps_uid = %s",
            (
                step.status,
                step.study_uid,
                step.accession_number,
                step.sps_id,
                step.modality,
                step.station_ae,
                step.item,
                tenant,
                mpps_uid,
            ),
        )
        await _mark_worklist(conn, tenant, step)


async def _mark_worklist(conn: AsyncConnection, tenant: str, step: PerformedStep) -> None:
    if step.accession_number and step.sps_id:
        status = WORKLIST_STATUS.get(step.status, step.status)
        # the column answers matching, the item answers the query: both carry the new status
        await conn.execute(
            "UPDATE worklist_item SET sps_status = %s, updated_at = now(), item = jsonb_set(item,"
            " '{00400100,Value,0,00400020}', jsonb_build_object('vr', 'CS', 'Value', jsonb_build_array(%s::text)))"
            " WHERE tenant = %s AND accession_number = %s AND sps_id = %s",
            (status, status, tenant, step.accession_number, step.sps_id),
        )
