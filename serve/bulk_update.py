"""A study update API in the shape of Microsoft's DICOM service bulk update: POST
`{dicomweb root}/studies/$bulkUpdate` with `studyInstanceUids` and a `changeDataset` (DICOM JSON
of patient and study attributes) answers 202 with an operation; GET `operations/{id}` tells its
status. The work is an UpdateWorkflow (`update:{tenant}:{id}`), visible in the Temporal UI; it needs
both the writer and the updater role."""

from __future__ import annotations

import uuid
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field, ValidationError

from archive.audit import AuditAction
from archive.corrections.changes import BadChange, Changes
from archive.identity import Role
from archive.index import updates
from contract.payloads import UpdateRequest
from contract.starts import start_update
from serve.deps import Caller, IngestDep, Pool, Tenant, access, audit_note, base_url
from serve.lookup import check_uids

MAX_STUDIES = 1000  # per request, as a client batches them
# read before it is parsed: 1,000 UIDs and a change data set take about 100 KB
MAX_BODY_BYTES = 1024 * 1024

router = APIRouter(
    tags=["Update"],
    dependencies=[
        Depends(access(Role.WRITER, AuditAction.PATIENT_RECORD)),
        Depends(access(Role.UPDATER, AuditAction.PATIENT_RECORD)),
    ],
)
status_router = APIRouter(tags=["Update"], dependencies=[Depends(access(Role.READER, AuditAction.READ))])


class BulkUpdate(BaseModel):
    model_config = {"extra": "forbid"}

    studyInstanceUids: list[str] = Field(min_length=1, max_length=MAX_STUDIES)  # noqa: N815 - the service's field names
    changeDataset: dict[str, Any]  # noqa: N815


async def bounded_body(request: Request) -> BulkUpdate:
    """The body, read up to MAX_BODY_BYTES and only then parsed: FastAPI would read any length whole."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise HTTPException(413, f"the body is {declared} bytes; a bulk update takes at most {MAX_BODY_BYTES}")
    data = bytearray()
    async for chunk in request.stream():
        data += chunk
        if len(data) > MAX_BODY_BYTES:
            raise HTTPException(413, f"the body is over {MAX_BODY_BYTES} bytes, the most a bulk update takes")
    try:
        return BulkUpdate.model_validate_json(bytes(data))
    except ValidationError as err:
        raise RequestValidationError(err.errors(include_url=False)) from None  # answered as every malformed request is


@router.post(
    "/dicomweb/studies/$bulkUpdate",
    status_code=202,
    summary="Update patient and study attributes of studies",
    openapi_extra={
        "requestBody": {"required": True, "content": {"application/json": {"schema": BulkUpdate.model_json_schema()}}}
    },
)
async def bulk_update(
    request: Request, tenant: Tenant, caller: Caller, ingest: IngestDep, body: BulkUpdate = Depends(bounded_body)
) -> JSONResponse:
    for uid in body.studyInstanceUids:
        check_uids(study=uid)
    try:
        changes = Changes.from_dicom_json(body.changeDataset)
    except BadChange as err:
        raise HTTPException(400, str(err)) from None
    op_id = uuid.uuid4().hex
    audit_note(request)["detail"] = {
        "operation": op_id,
        "studies": body.studyInstanceUids[:100],
        "changed": sorted(changes.values),
    }
    update = UpdateRequest(tenant, op_id, "bulk", changes.values, sorted(set(body.studyInstanceUids)))
    await updates.create_operation(
        ingest.pool, op_id, tenant, "bulk", {"studies": update.study_uids, "changes": changes.values}, caller.subject
    )
    try:
        await start_update(await ingest.temporal_client(), ingest.settings.temporal.task_queue, update)
    except Exception as err:  # noqa: BLE001 - nothing was changed: the client may send it again
        await updates.finish(ingest.pool, op_id, "failed", f"could not start: {err}"[:500])
        raise HTTPException(
            503, "the workflow service is unreachable; nothing was changed, send again", headers={"Retry-After": "5"}
        ) from None
    href = f"{base_url(request)}{_root(request)}/operations/{op_id}"
    return JSONResponse({"id": op_id, "href": href}, status_code=202, headers={"Location": href})


@status_router.get("/dicomweb/operations/{operation_id}", summary="The status of an update operation")
async def operation_status(operation_id: str, tenant: Tenant, pool: Pool) -> dict[str, Any]:
    found = await updates.operation(pool, operation_id[:64])
    if found is None or found["tenant"] != tenant:
        raise HTTPException(404, "no such operation in this tenant")
    total, done = found["studies_total"], found["studies_done"]
    return {
        "operationId": found["id"],
        "type": "update",
        "createdTime": found["created_at"].isoformat(),
        "lastUpdatedTime": found["updated_at"].isoformat(),
        "status": found["status"],
        "percentComplete": 100 if found["status"] != "running" else (100 * done // total if total else 0),
        "results": {"studiesUpdated": done, "studiesRequested": total, "errors": [found["error"]] if found["error"] else []},
    }


def _root(request: Request) -> str:
    tenant = request.path_params.get("tenant")
    return f"/tenants/{tenant}/dicomweb" if tenant else "/dicomweb"
