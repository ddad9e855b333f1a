"""The outbox reconciler. Instances whose rows are committed but whose workflow never got a signal
(Temporal was down, the receiver died between commit and flush) are signalled again. Studies whose
signal was delivered but whose instances sit unprocessed with no workflow running (Temporal lost its
state: a power cut under `temporal_sqlite_sync = "normal"`, a wiped dev server) are re-driven."""

from __future__ import annotations

import asyncio
import logging

from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.service import RPCError, RPCStatusCode

from archive.index.instances import mark_signalled, stalled_studies, unsignalled_studies
from archive.settings import Settings
from workflows.client import signal_study
from workflows.study import workflow_id

log = logging.getLogger("dicomflow.reconciler")


async def reconcile_once(client: Client, pool, settings: Settings, older_than_seconds: float = 10.0) -> int:
    studies = await unsignalled_studies(pool, older_than_seconds)
    for tenant, study_uid, modality, sop_uids in studies:
        await signal_study(client, settings.temporal_task_queue, tenant, study_uid, len(sop_uids), modality, settings.stable_seconds)
        await mark_signalled(pool, tenant, sop_uids)
    if studies:
        log.info("reconciler signalled %d studies", len(studies))
    return len(studies)


async def _workflow_running(client: Client, tenant: str, study_uid: str) -> bool:
    try:
        description = await client.get_workflow_handle(workflow_id(tenant, study_uid)).describe()
    except RPCError as err:
        if err.status == RPCStatusCode.NOT_FOUND:
            return False
        raise
    return description.status == WorkflowExecutionStatus.RUNNING


async def redrive_stalled_once(client: Client, pool, settings: Settings, older_than_seconds: float | None = None) -> int:
    """Signal-with-start every stalled study whose workflow is not running; the steps are idempotent."""
    older = settings.stalled_study_seconds if older_than_seconds is None else older_than_seconds
    redriven = 0
    for tenant, study_uid, modality, count in await stalled_studies(pool, older):
        if await _workflow_running(client, tenant, study_uid):
            continue
        await signal_study(client, settings.temporal_task_queue, tenant, study_uid, count, modality, settings.stable_seconds)
        redriven += 1
    if redriven:
        log.warning("reconciler re-drove %d studies whose workflow state was missing", redriven)
    return redriven


async def reconcile_forever(client: Client, pool, settings: Settings, interval: float = 5.0) -> None:
    while True:
        try:
            await reconcile_once(client, pool, settings)
            await redrive_stalled_once(client, pool, settings)
        except Exception:  # noqa: BLE001 - try again next round
            log.warning("reconcile round failed", exc_info=True)
        await asyncio.sleep(interval)
