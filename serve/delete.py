"""DELETE of a study, series or instance: rows, blobs, generated JSON and cache entries go.

The deletion is recorded in the index's outbox in the same transaction as the rows, so the
study's workflow hears of it (and refreshes the study's aggregates and JSON) even when Temporal
is down right now: the reconciler signals it later. The answer is 204 either way."""

from __future__ import annotations

import logging

from fastapi import APIRouter, Depends, HTTPException
from fastapi.responses import Response

from archive.audit import AuditAction
from archive.identity import Role
from archive.index.deletion import delete_objects, deletion_signalled
from archive.services.removals import remove_queued
from contract.starts import signal_study
from serve.deps import IngestDep, Tenant, access
from serve.lookup import check_uids
from serve.wado_metadata import forget_metadata

log = logging.getLogger("dicomflow.delete")
router = APIRouter(tags=["Delete"], dependencies=[Depends(access(Role.DELETER, AuditAction.DELETE))])


async def delete(ingest: IngestDep, tenant: str, study: str, series: str | None = None, instance: str | None = None) -> Response:
    check_uids(study=study, series=series, instance=instance)
    deleted = await delete_objects(ingest.pool, tenant, study, series, instance)
    if not deleted.instances:
        raise HTTPException(404, "nothing to delete for this tenant")
    await remove_queued(ingest.pool, ingest.blobs, deleted.blob_keys, "a deleted object")
    await forget_metadata(ingest.resources.cache, tenant, study)
    settings = ingest.settings
    try:
        client = await ingest.temporal_client()
        await signal_study(
            client,
            settings.temporal.task_queue,
            tenant,
            study,
            0,
            None,
            settings.ingest.stable_seconds,
            deleted=deleted.instances,
            settled=True,  # the request is all the deletion there is
        )
        await deletion_signalled(ingest.pool, tenant, study, deleted.instances)
    except Exception:  # noqa: BLE001 - the outbox row stays; the reconciler tells the workflow later
        log.warning("deletion in %s not signalled yet; the reconciler will", study, exc_info=True)
    return Response(status_code=204)


@router.delete("/dicomweb/studies/{study}", summary="Delete a study")
async def delete_study(ingest: IngestDep, tenant: Tenant, study: str) -> Response:
    return await delete(ingest, tenant, study)


@router.delete("/dicomweb/studies/{study}/series/{series}", summary="Delete a series")
async def delete_series(ingest: IngestDep, tenant: Tenant, study: str, series: str) -> Response:
    return await delete(ingest, tenant, study, series)


@router.delete("/dicomweb/studies/{study}/series/{series}/instances/{instance}", summary="Delete an instance")
async def delete_instance(ingest: IngestDep, tenant: Tenant, study: str, series: str, instance: str) -> Response:
    return await delete(ingest, tenant, study, series, instance)
