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


FORWARDS_SQL = """
SELECT r.destination,
       count(*) FILTER (WHERE ri.state = 'pending'),
       count(*) FILTER (WHERE ri.state = 'failed'),
       coalesce(extract(epoch FROM now() - min(r.created_at) FILTER (WHERE ri.state = 'pending')), 0)
FROM retrieve r JOIN retrieve_item ri ON ri.retrieve_id = r.id
WHERE r.requested_by LIKE 'forward:%'
GROUP BY 1 ORDER BY 1
"""


async def forward_queues(conn: AsyncConnection) -> dict[str, dict[str, float]]:
    """Per forwarding destination: instances still owed, instances it refused or that were given
    up on, and the age in seconds of the oldest forward still owing some."""
    rows = await (await conn.execute(FORWARDS_SQL)).fetchall()
    return {str(d): {"pending": int(p), "failed": int(f), "oldest_pending_seconds": round(float(a), 1)} for d, p, f, a in rows}


async def forward_failures(conn: AsyncConnection, tenants: frozenset[str] | None, limit: int = 50) -> list[dict[str, object]]:
    """The latest instances forwards failed to deliver, newest first: rule, destination, status.
    `tenants`: only these tenants' forwards (None: every tenant)."""
    rows = await (
        await conn.execute(
            """SELECT r.tenant, substr(r.requested_by, 9), r.destination, ri.sop_uid, ri.status, r.created_at
               FROM retrieve r JOIN retrieve_item ri ON ri.retrieve_id = r.id
               WHERE r.requested_by LIKE 'forward:%%' AND ri.state = 'failed' AND (%s::text[] IS NULL OR r.tenant = ANY(%s))
               ORDER BY r.created_at DESC, ri.position LIMIT %s""",
            (None if tenants is None else sorted(tenants), None if tenants is None else sorted(tenants), limit),
        )
    ).fetchall()
    keys = ("tenant", "rule", "destination", "sop_uid", "status")
    return [{**dict(zip(keys, row[:5])), "listed_at": row[5].isoformat()} for row in rows]
