"""The worklist table: scheduled procedure steps per tenant, written by an import or UPS-RS."""

from __future__ import annotations

from dataclasses import astuple

from psycopg_pool import AsyncConnectionPool

from archive.services.worklist import WorklistRow

_COLUMNS = (
    "accession_number, sps_id, patient_id, patient_name, patient_birth_date, patient_sex, study_uid,"
    " requested_procedure_id, modality, station_aes, start_date, start_time, performing_physician,"
    " sps_description, sps_status, item"
)


async def upsert(pool: AsyncConnectionPool, tenant: str, rows: list[WorklistRow], workitem_uid: str | None = None) -> int:
    """Schedule the items, replacing those with the same accession number and step ID; how many.
    `workitem_uid`: the UPS-RS workitem they come from."""
    names = [c.strip() for c in _COLUMNS.split(",")]
    updates = ", ".join(f"{c} = EXCLUDED.{c}" for c in names[2:])
    values = ", ".join(["%s"] * (len(names) - 1) + ["%s::jsonb"])
    sql = (
        f"INSERT INTO worklist_item (tenant, {_COLUMNS}, workitem_uid) VALUES (%s, {values}, %s)"
        f" ON CONFLICT (tenant, accession_number, sps_id) DO UPDATE SET {updates}, updated_at = now()"
    )
    async with pool.connection() as conn, conn.transaction():
        await conn.execute("INSERT INTO tenant (name) VALUES (%s) ON CONFLICT DO NOTHING", (tenant,))
        async with conn.cursor() as cur:
            await cur.executemany(sql, [(tenant, *astuple(row), workitem_uid) for row in rows])
    return len(rows)
