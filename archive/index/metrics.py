"""What an operator graphs, read from the index at scrape time so every replica tells the same
story: instances by tenant, protocol and state, studies by state, the signal outbox, commitments,
retrieves, refusals. Counts and tenant names only: no patient identifiers."""

from __future__ import annotations

from dataclasses import dataclass

from psycopg_pool import AsyncConnectionPool


@dataclass(frozen=True)
class Sample:
    name: str
    help: str
    labels: dict[str, str]
    value: float


_QUERIES: list[tuple[str, str, list[str], str]] = [
    (
        "dicomflow_instances",
        "Instances in the index by tenant, receiving protocol and state",
        ["tenant", "protocol", "state"],
        "SELECT tenant, split_part(source, ':', 1), state, count(*) FROM instance GROUP BY 1, 2, 3",
    ),
    (
        "dicomflow_stored_bytes",
        "Bytes of the objects each tenant stores (as stored: after any lossless compression), by blob store tier",
        ["tenant", "tier"],
        "SELECT tenant, tier, coalesce(sum(size), 0) FROM instance GROUP BY 1, 2",
    ),
    (
        "dicomflow_compression_saved_bytes",
        "Bytes lossless compression (lifecycle rules) saved, by tenant",
        ["tenant"],
        "SELECT tenant, coalesce(sum(bytes_saved), 0) FROM lifecycle_done GROUP BY 1",
    ),
    (
        "dicomflow_studies",
        "Studies by tenant and state (receiving, ready, ...)",
        ["tenant", "state"],
        "SELECT tenant, state, count(*) FROM study GROUP BY 1, 2",
    ),
    (
        "dicomflow_outbox_unsignalled_instances",
        "Instances whose workflow has not been signalled yet",
        [],
        "SELECT count(*) FROM instance WHERE NOT signalled",
    ),
    (
        "dicomflow_commitments",
        "Storage commitment requests by state",
        ["state"],
        "SELECT state, count(*) FROM storage_commitment GROUP BY 1",
    ),
    ("dicomflow_retrieves", "C-MOVE retrieves by state", ["state"], "SELECT state, count(*) FROM retrieve GROUP BY 1"),
    (
        "dicomflow_forward_instances",
        "Instances of forwards by destination and state (pending: the destination's queue; completed, warning, failed)",
        ["destination", "state"],
        "SELECT r.destination, ri.state, count(*) FROM retrieve r JOIN retrieve_item ri ON ri.retrieve_id = r.id"
        " WHERE r.requested_by LIKE 'forward:%' GROUP BY 1, 2",
    ),
    (
        "dicomflow_forward_oldest_pending_seconds",
        "Age of the oldest forward still owing instances, by destination",
        ["destination"],
        "SELECT r.destination, extract(epoch FROM now() - min(r.created_at)) FROM retrieve r"
        " WHERE r.requested_by LIKE 'forward:%' AND r.state = 'running' GROUP BY 1",
    ),
    (
        "dicomflow_refused_instances_total",
        "Instances refused at receipt (audit trail), by channel",
        ["source"],
        "SELECT source, coalesce(sum(coalesce((detail->>'refused_instances')::int, (detail->'detail'->>'failed')::int, 0)), 0)"
        " FROM audit_event WHERE event_code = 110104 AND action = 'C' GROUP BY 1",
    ),
]


# every family, so a scrape names it even while it has no sample (no retrieve yet, say)
FAMILIES: list[tuple[str, str, list[str]]] = [(name, help_text, labels) for name, help_text, labels, _ in _QUERIES]


async def index_samples(pool: AsyncConnectionPool) -> list[Sample]:
    samples = []
    async with pool.connection() as conn:
        for name, help_text, labels, sql in _QUERIES:
            for row in await (await conn.execute(sql)).fetchall():
                samples.append(Sample(name, help_text, dict(zip(labels, (str(v) for v in row[:-1]))), float(row[-1] or 0)))
    return samples
