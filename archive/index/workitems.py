"""The workitem table (UPS-RS), and the worklist item a workitem with an accession number becomes."""

from __future__ import annotations

from dataclasses import astuple
from typing import Any

from psycopg_pool import AsyncConnectionPool

from archive.index import worklist
from archive.services.ups import WorkitemRow
from archive.services.worklist import WorklistRow

_COLUMNS = "uid, state, label, worklist_label, priority, start_datetime, patient_name, patient_id, transaction_uid, item"


class WorkitemExists(ValueError):
    pass


async def create(pool: AsyncConnectionPool, tenant: str, row: WorkitemRow, mwl: WorklistRow | None) -> None:
    async with pool.connection() as conn:
        await conn.execute("INSERT INTO tenant (name) VALUES (%s) ON CONFLICT DO NOTHING", (tenant,))
        cursor = await conn.execute(
            f"INSERT INTO workitem (tenant, {_COLUMNS}) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s::jsonb)"
            " ON CONFLICT DO NOTHING",
            (tenant, *astuple(row)),
        )
    if cursor.rowcount == 0:
        raise WorkitemExists(row.uid)
    if mwl is not None:
        await worklist.upsert(pool, tenant, [mwl], workitem_uid=row.uid)


async def load(pool: AsyncConnectionPool, tenant: str, uid: str) -> tuple[dict[str, Any], str | None] | None:
    """The stored workitem (DICOM JSON) and the Transaction UID that holds it, or None."""
    async with pool.connection() as conn:
        row = await (
            await conn.execute("SELECT item, transaction_uid FROM workitem WHERE tenant = %s AND uid = %s", (tenant, uid))
        ).fetchone()
    return (row[0], row[1]) if row else None


async def update(pool: AsyncConnectionPool, tenant: str, row: WorkitemRow, mwl: WorklistRow | None) -> None:
    async with pool.connection() as conn:
        await conn.execute(
            "UPDATE workitem SET state = %s, transaction_uid = %s, item = %s::jsonb, updated_at = now()"
            " WHERE tenant = %s AND uid = %s",
            (row.state, row.transaction_uid, row.item, tenant, row.uid),
        )
    if mwl is not None:
        await worklist.upsert(pool, tenant, [mwl], workitem_uid=row.uid)
