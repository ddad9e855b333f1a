"""The change feed: every instance stored, replaced or deleted, in the order a reader may rely on.

Each change writes its row in the very statement that makes it (archive/index/instances.py,
archive/index/deletion.py), so the feed can never disagree with the index. Sequence numbers are
not taken there: two receipts may commit in the other order than they began, and a reader that
had seen 8 would never see a 7 that committed after. A sequencer gives numbers instead, in commit
order: one at a time (an advisory lock), it numbers the rows that have committed and have none
yet, per tenant and without gaps. Every read runs it first, so whatever committed before a read
is numbered by the time the read answers, and whatever commits later gets a higher number.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

SEQUENCER_LOCK = 0x64666366  # "dfcf": one sequencer at a time, across every process
BATCH = 10_000
MAX_LIMIT = 1000

_NUMBER = """
WITH todo AS (
    SELECT id, tenant FROM change_feed WHERE sequence IS NULL ORDER BY id LIMIT %s FOR UPDATE
), numbered AS (
    SELECT t.id,
           coalesce((SELECT max(c.sequence) FROM change_feed c WHERE c.tenant = t.tenant AND c.sequence IS NOT NULL), 0)
           + row_number() OVER (PARTITION BY t.tenant ORDER BY t.id) AS sequence
    FROM todo t
)
UPDATE change_feed c SET sequence = n.sequence FROM numbered n WHERE c.id = n.id
"""

_READ = """
SELECT c.sequence, c.study_uid, c.series_uid, c.sop_uid, c.sop_class_uid, c.action, c.occurred_at,
       CASE WHEN latest.action = 'delete' THEN 'deleted' WHEN latest.id = c.id THEN 'current' ELSE 'replaced' END
FROM change_feed c
JOIN LATERAL (
    SELECT l.id, l.action FROM change_feed l
    WHERE l.tenant = c.tenant AND l.sop_uid = c.sop_uid AND l.sequence IS NOT NULL
    ORDER BY l.sequence DESC LIMIT 1
) latest ON true
WHERE c.tenant = %s AND c.sequence > %s
ORDER BY c.sequence
LIMIT %s
"""


@dataclass(frozen=True)
class Change:
    sequence: int
    study_uid: str
    series_uid: str
    sop_uid: str
    sop_class_uid: str | None
    action: str  # create | update | delete
    timestamp: datetime
    state: str  # current | replaced | deleted: what became of the instance since


async def number_committed(conn: AsyncConnection, wait: bool) -> int:
    """Number what has committed and has no sequence yet; how many. Not waiting, a sequencer already
    at work elsewhere is left to it."""
    total = 0
    while True:
        async with conn.transaction():
            if wait:
                await conn.execute("SELECT pg_advisory_xact_lock(%s)", (SEQUENCER_LOCK,))
            else:
                row = await (await conn.execute("SELECT pg_try_advisory_xact_lock(%s)", (SEQUENCER_LOCK,))).fetchone()
                if not row or not row[0]:
                    return total
            numbered = (await conn.execute(_NUMBER, (BATCH,))).rowcount
        total += numbered
        if numbered < BATCH:
            return total


async def read_changes(pool: AsyncConnectionPool, tenant: str, after: int, limit: int) -> list[Change]:
    """The changes after sequence `after`: every change committed before this call is numbered first."""
    async with pool.connection() as conn:
        await number_committed(conn, wait=True)
        rows = await (await conn.execute(_READ, (tenant, after, min(limit, MAX_LIMIT)))).fetchall()
    return [Change(*row) for row in rows]


async def latest_change(pool: AsyncConnectionPool, tenant: str) -> Change | None:
    async with pool.connection() as conn:
        await number_committed(conn, wait=True)
        row = await (
            await conn.execute("SELECT max(sequence) FROM change_feed WHERE tenant = %s AND sequence IS NOT NULL", (tenant,))
        ).fetchone()
        last = int(row[0]) if row and row[0] is not None else 0
        rows = await (await conn.execute(_READ, (tenant, last - 1, 1))).fetchall()
    return Change(*rows[0]) if rows else None
