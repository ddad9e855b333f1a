"""The backlog `dicomflow status` shows: the index's counts (archive/index/backlog.py) and the study
workflows Temporal runs or has failed. Each half reports its own error instead of failing both."""

from __future__ import annotations

from typing import Any

from psycopg import AsyncConnection

from archive.config.settings import Settings
from archive.index.backlog import forward_queues, index_backlog
from archive.index.tiers import bytes_by_tier, bytes_saved
from contract.names import STUDY_WORKFLOW


async def _index_half(settings: Settings) -> dict[str, Any]:
    async with await AsyncConnection.connect(settings.effective_postgres_dsn(), connect_timeout=3, autocommit=True) as conn:
        storage = [{"tenant": t, "tier": tier, "objects": n, "bytes": b} for t, tier, n, b in await bytes_by_tier(conn)]
        return {
            **await index_backlog(conn),
            "forwards": await forward_queues(conn),
            "storage": storage,
            "compression_saved_bytes": await bytes_saved(conn),
        }


async def _temporal_half(settings: Settings) -> dict[str, Any]:
    from temporalio.client import Client

    client = await Client.connect(settings.effective_temporal_address(), namespace=settings.temporal.namespace)
    counts = {}
    for key, status in (("study_workflows_running", "Running"), ("study_workflows_failed", "Failed")):
        answer = await client.count_workflows(f"WorkflowType = '{STUDY_WORKFLOW}' AND ExecutionStatus = '{status}'")
        counts[key] = answer.count
    return counts


async def backlog(settings: Settings) -> dict[str, Any]:
    report: dict[str, Any] = {}
    for name, half in (("index", _index_half), ("temporal", _temporal_half)):
        try:
            report.update(await half(settings))
        except Exception as err:  # noqa: BLE001 - status reports what it can reach
            report[f"{name}_error"] = f"{type(err).__name__}: {err}"
    return report


def backlog_lines(report: dict[str, Any]) -> list[str]:
    """The workflow backlog, then what waits in the index's queues; a count not reachable shows as ?."""

    def n(key: str) -> Any:
        return report.get(key, "?")

    lines = [
        f"  backlog: {n('studies_not_ready')} studies not ready, {n('study_workflows_running')} study workflows running, "
        f"{n('study_workflows_failed')} failed",
        f"  queues:  outbox {n('outbox_unsignalled')} instances not yet signalled, {n('instances_unprocessed')} unprocessed, "
        f"{n('instances_failed')} failed; storage commitment {n('commitments_pending')} pending; "
        f"C-MOVE/C-GET {n('retrieves_running')} running",
    ]
    for destination, queue in (report.get("forwards") or {}).items():
        lines.append(
            f"  forward: {destination}: {queue['pending']} instances owed (oldest forward {queue['oldest_pending_seconds']:g} s), "
            f"{queue['failed']} failed"
        )
    return (
        lines
        + storage_lines(report)
        + [
            f"  backlog: {key.removesuffix('_error')} not reachable ({error})"
            for key, error in report.items()
            if key.endswith("_error")
        ]
    )


def storage_lines(report: dict[str, Any]) -> list[str]:
    """Bytes by tenant and tier, and what compression saved each tenant."""
    saved = report.get("compression_saved_bytes") or {}
    return [
        f"  storage: {row['tenant']} {row['tier']}: {row['objects']} objects, {_gib(row['bytes'])}"
        + (f" ({_gib(saved[row['tenant']])} saved by compression)" if row["tier"] == "hot" and saved.get(row["tenant"]) else "")
        for row in report.get("storage") or []
    ]


def _gib(size: int) -> str:
    return f"{size / 2**30:.2f} GiB" if size >= 2**30 else f"{size / 2**20:.1f} MiB"
