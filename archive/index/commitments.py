"""Storage commitment requests and their outcomes, kept in PostgreSQL."""

from __future__ import annotations

import json
from dataclasses import dataclass

from psycopg_pool import AsyncConnectionPool


@dataclass(frozen=True)
class CommitmentRow:
    tenant: str
    transaction_uid: str
    calling_ae: str
    refs: list[tuple[str, str]]  # (SOP Class UID, SOP Instance UID)
    state: str
    age_seconds: float = 0.0  # since the N-ACTION was recorded, by the index's clock


async def record_request(
    pool: AsyncConnectionPool, tenant: str, transaction_uid: str, calling_ae: str, called_ae: str, refs: list[tuple[str, str]]
) -> bool:
    """False when this Transaction UID was already requested (a resend changes nothing)."""
    async with pool.connection() as conn:
        await conn.execute("INSERT INTO tenant (name) VALUES (%s) ON CONFLICT DO NOTHING", (tenant,))
        cur = await conn.execute(
            """INSERT INTO storage_commitment (tenant, transaction_uid, calling_ae, called_ae, refs)
               VALUES (%s, %s, %s, %s, %s) ON CONFLICT DO NOTHING""",
            (tenant, transaction_uid, calling_ae, called_ae, json.dumps([list(r) for r in refs])),
        )
        return cur.rowcount == 1


async def load_request(pool: AsyncConnectionPool, tenant: str, transaction_uid: str) -> CommitmentRow | None:
    async with pool.connection() as conn:
        row = await (
            await conn.execute(
                "SELECT tenant, transaction_uid, calling_ae, refs, state, extract(epoch FROM now() - requested_at)::float8"
                " FROM storage_commitment WHERE tenant = %s AND transaction_uid = %s",
                (tenant, transaction_uid),
            )
        ).fetchone()
    if row is None:
        return None
    return CommitmentRow(row[0], row[1], row[2], [tuple(r) for r in row[3]], row[4], float(row[5]))


async def instance_states(pool: AsyncConnectionPool, tenant: str, sop_uids: list[str]) -> dict[str, tuple[str, str]]:
    """sop uid -> (state, sop class) for those that exist."""
    async with pool.connection() as conn:
        rows = await (
            await conn.execute(
                "SELECT sop_uid, state, sop_class_uid FROM instance WHERE tenant = %s AND sop_uid = ANY(%s)",
                (tenant, sop_uids),
            )
        ).fetchall()
    return {r[0]: (r[1], r[2]) for r in rows}


async def record_outcome(
    pool: AsyncConnectionPool,
    tenant: str,
    transaction_uid: str,
    state: str,
    committed: list[tuple[str, str]],
    failed: list[tuple[str, str, int]],
) -> None:
    async with pool.connection() as conn:
        await conn.execute(
            """UPDATE storage_commitment SET state = %s, committed = %s, failed = %s, reported_at = now()
               WHERE tenant = %s AND transaction_uid = %s""",
            (state, json.dumps(committed), json.dumps(failed), tenant, transaction_uid),
        )


async def pending_transactions(pool: AsyncConnectionPool, tenant: str) -> list[str]:
    async with pool.connection() as conn:
        rows = await (
            await conn.execute(
                "SELECT transaction_uid FROM storage_commitment WHERE tenant = %s AND state = 'pending'", (tenant,)
            )
        ).fetchall()
    return [r[0] for r in rows]


CLAIM_SECONDS = 15  # a claim not refreshed this long is a dead reporter's: another may take it


async def claim_report(pool: AsyncConnectionPool, tenant: str, transaction_uid: str) -> bool:
    """The right to send this transaction's N-EVENT-REPORT, for one reporter at a time; False when
    another holds it or it is already reported."""
    async with pool.connection() as conn:
        cur = await conn.execute(
            "UPDATE storage_commitment SET state = 'reporting', claimed_at = now() WHERE tenant = %s AND transaction_uid = %s"
            " AND (state = 'pending' OR (state = 'reporting' AND claimed_at < now() - make_interval(secs => %s)))",
            (tenant, transaction_uid, CLAIM_SECONDS),
        )
        return cur.rowcount == 1


async def release_claim(pool: AsyncConnectionPool, tenant: str, transaction_uid: str) -> None:
    """The claimer could not deliver: another reporter may try."""
    async with pool.connection() as conn:
        await conn.execute(
            "UPDATE storage_commitment SET state = 'pending', claimed_at = NULL WHERE tenant = %s"
            " AND transaction_uid = %s AND state = 'reporting'",
            (tenant, transaction_uid),
        )


async def refresh_claim(pool: AsyncConnectionPool, tenant: str, transaction_uid: str) -> None:
    """The claimer is alive (it waits for the instances, on the requester's open association)."""
    async with pool.connection() as conn:
        await conn.execute(
            "UPDATE storage_commitment SET claimed_at = now() WHERE tenant = %s AND transaction_uid = %s AND state = 'reporting'",
            (tenant, transaction_uid),
        )
