"""Advisory locks that order writers which row locks alone cannot.

A receipt's instance row is invisible to a concurrent DELETE until it commits, so the DELETE could
remove the series the receipt just wrote into, cascading its acknowledged row away and leaving its
blob behind. Receipts take their study's lock shared (they never wait for each other), a DELETE
takes it exclusive: each waits for the other, and a DELETE sees every row acknowledged before it.
The two-key form keeps these apart from the one-key migration lock.
"""

from __future__ import annotations

from psycopg import AsyncConnection

STUDY_LOCKS = 0x53545544  # "STUD": the lock space of (tenant, study) pairs
SWEEPER_LOCKS = 0x53574550  # "SWEP": one orphan sweep at a time across processes


async def lock_study(conn: AsyncConnection, tenant: str, study_uid: str, *, exclusive: bool = False) -> None:
    """Held until the transaction ends; a hash collision between studies only makes one wait."""
    function = "pg_advisory_xact_lock" if exclusive else "pg_advisory_xact_lock_shared"
    await conn.execute(f"SELECT {function}(%s, hashtext(%s))", (STUDY_LOCKS, f"{tenant}/{study_uid}"))
