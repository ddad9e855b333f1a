"""The outbox reconciler: instances whose rows are committed but whose workflow never got a
signal (Temporal was down, the receiver died between commit and flush) are signalled again."""

from __future__ import annotations

import asyncio
import logging

from temporalio.client import Client

from archive.index.instances import mark_signalled, unsignalled_studies
from archive.settings import Settings
from workflows.client import signal_study

log = logging.getLogger("dicomflow.reconciler")


async def reconcile_once(client: Client, pool, settings: Settings, older_than_seconds: float = 10.0) -> int:
    studies = await unsignalled_studies(pool, older_than_seconds)
    for tenant, study_uid, modality, sop_uids in studies:
        await signal_study(client, settings.temporal_task_queue, tenant, study_uid, len(sop_uids), modality, settings.stable_seconds)
        await mark_signalled(pool, tenant, sop_uids)
    if studies:
        log.info("reconciler signalled %d studies", len(studies))
    return len(studies)


async def reconcile_forever(client: Client, pool, settings: Settings, interval: float = 5.0) -> None:
    while True:
        try:
            await reconcile_once(client, pool, settings)
        except Exception:  # noqa: BLE001 - try again next round
            log.warning("reconcile round failed", exc_info=True)
        await asyncio.sleep(interval)
