"""The outbox reconciler. Instances whose rows are committed but whose workflow never got a signal
(Temporal was down, the receiver died between commit and flush) are signalled again. Studies whose
signal was delivered but whose instances sit unprocessed with no workflow running (Temporal lost its
state: a power cut under `temporal_sqlite_sync = "normal"`, a wiped dev server) are re-driven."""

from __future__ import annotations

import asyncio
import logging

from psycopg_pool import AsyncConnectionPool
from temporalio.client import Client

from archive.config.settings import Settings
from archive.index import retrieves
from archive.index.deletion import deletion_signalled, unsignalled_deletions
from archive.index.instances import mark_signalled, stalled_studies, unsignalled_studies
from contract.names import study_workflow_id as workflow_id
from contract.starts import signal_study

log = logging.getLogger("dicomflow.reconciler")
PRUNE_EVERY_ROUNDS = 720  # about an hour of 5-second rounds


async def reconcile_once(client: Client, pool: AsyncConnectionPool, settings: Settings, older_than_seconds: float = 10.0) -> int:
    studies = await unsignalled_studies(pool, older_than_seconds)
    for tenant, study_uid, modality, sop_uids in studies:
        await signal_study(
            client, settings.temporal.task_queue, tenant, study_uid, len(sop_uids), modality, settings.ingest.stable_seconds
        )
        await mark_signalled(pool, tenant, sop_uids)
    deletions = await unsignalled_deletions(pool, older_than_seconds)
    for tenant, study_uid, count in deletions:
        await signal_study(
            client, settings.temporal.task_queue, tenant, study_uid, 0, None, settings.ingest.stable_seconds, deleted=count
        )
        await deletion_signalled(pool, tenant, study_uid, count)
    if studies or deletions:
        log.info("reconciler signalled %d studies with arrivals, %d with deletions", len(studies), len(deletions))
    return len(studies) + len(deletions)


async def _running(client: Client, workflow_ids: list[str]) -> set[str]:
    """Which of these workflows are running: one visibility query, not a describe per study."""
    if not workflow_ids:
        return set()
    quoted = ", ".join("'" + wid.replace("'", "") + "'" for wid in workflow_ids)
    query = f"WorkflowId IN ({quoted}) AND ExecutionStatus = 'Running'"
    return {w.id async for w in client.list_workflows(query)}


async def redrive_stalled_once(
    client: Client, pool: AsyncConnectionPool, settings: Settings, older_than_seconds: float | None = None
) -> int:
    """Signal-with-start every stalled study whose workflow is not running; the steps are idempotent."""
    older = settings.ingest.stalled_study_seconds if older_than_seconds is None else older_than_seconds
    stalled = await stalled_studies(pool, older)
    running = await _running(client, [workflow_id(tenant, study) for tenant, study, _, _ in stalled])
    redriven = 0
    for tenant, study_uid, modality, count in stalled:
        if workflow_id(tenant, study_uid) in running:
            continue
        await signal_study(
            client, settings.temporal.task_queue, tenant, study_uid, count, modality, settings.ingest.stable_seconds
        )
        redriven += 1
    if redriven:
        log.warning("reconciler re-drove %d studies whose workflow state was missing", redriven)
    return redriven


async def reconcile_forever(client: Client, pool: AsyncConnectionPool, settings: Settings, interval: float = 5.0) -> None:
    rounds = 0
    while True:
        try:
            await reconcile_once(client, pool, settings)
            await redrive_stalled_once(client, pool, settings)
            if rounds % PRUNE_EVERY_ROUNDS == 0:
                await retrieves.prune(pool, settings.ingest.retrieve_retention_days)
        except Exception:  # noqa: BLE001 - try again next round
            log.warning("reconcile round failed", exc_info=True)
        rounds += 1
        await asyncio.sleep(interval)
