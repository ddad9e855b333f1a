"""What the archive still owes: studies not ready, instances not yet signalled to their workflow
(the outbox) or not yet processed, failed instances, storage commitments and retrieves under way.
Each count reads a partial index, so `dicomflow status` stays cheap at any archive size."""

from __future__ import annotations

from psycopg import AsyncConnection

BACKLOG_SQL = """
SELECT (SELECT count(*) FROM study WHERE state <> 'ready'),
       (SELECT count(*) FROM instance WHERE NOT signalled),
       (SELECT count(*) FROM instance WHERE state = 'received' AND signalled),
       (SELECT count(*) FROM instance WHERE state = 'failed'),
       (SELECT count(*) FROM storage_commitment WHERE state IN ('pending', 'reporting')),
       (SELECT count(*) FROM retrieve WHERE state = 'running')
"""
BACKLOG_KEYS = (
    "studies_not_ready",
    "outbox_unsignalled",
    "instances_unprocessed",
    "instances_failed",
    "commitments_pending",
    "retrieves_running",
)


async def index_backlog(conn: AsyncConnection) -> dict[str, int]:
    row = await (await conn.execute(BACKLOG_SQL)).fetchone()
    return dict(zip(BACKLOG_KEYS, row or (0,) * len(BACKLOG_KEYS)))
