"""DELETE of a study, series or instance: rows, blobs, generated JSON and cache entries go."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import Response

from archive.index.deletion import delete_objects
from serve.lookup import request_tenant
from serve.state import get_ingest
from serve.wado_metadata import forget_metadata
from workflows.client import signal_study

router = APIRouter(tags=["Delete"])


async def delete(request: Request, study: str, series: str | None = None, instance: str | None = None) -> Response:
    tenant = request_tenant(request, study=study, series=series, instance=instance)
    ingest = await get_ingest(request)
    deleted = await delete_objects(ingest.pool, tenant, study, series, instance)
    if not deleted.instances:
        raise HTTPException(404, "nothing to delete for this tenant")
    for key in deleted.blob_keys:
        await asyncio.to_thread(ingest.blobs.delete, key)
    await forget_metadata(request, tenant, study)
    settings = request.app.state.settings
    # the study's workflow records the deletion and refreshes the study's aggregates and JSON
    client = await ingest.temporal_client()
    await signal_study(client, settings.temporal_task_queue, tenant, study, 0, None, settings.stable_seconds,
                       deleted=deleted.instances)
    return Response(status_code=204)


@router.delete("/dicomweb/studies/{study}", summary="Delete a study")
async def delete_study(request: Request, study: str) -> Response:
    return await delete(request, study)


@router.delete("/dicomweb/studies/{study}/series/{series}", summary="Delete a series")
async def delete_series(request: Request, study: str, series: str) -> Response:
    return await delete(request, study, series)


@router.delete("/dicomweb/studies/{study}/series/{series}/instances/{instance}", summary="Delete an instance")
async def delete_instance(request: Request, study: str, series: str, instance: str) -> Response:
    return await delete(request, study, series, instance)
