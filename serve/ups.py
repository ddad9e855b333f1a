"""UPS-RS (PS3.18 11): create, retrieve, search and change the state of workitems. A workitem that
names its requested procedure also appears in the Modality Worklist."""

from __future__ import annotations

import json
import uuid
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response
from pydicom.dataset import Dataset

from archive.audit import AuditAction
from archive.identity import Role
from archive.index import workitems
from archive.query.attributes import WORKITEM_BY_KEYWORD, Attribute
from archive.query.builder import BadQuery, MatchKey, QuerySpec, build
from archive.query.qido import DEFAULT_LIMIT, MAX_LIMIT
from archive.services.ups import WorkitemRefused, changed_state, new_workitem, worklist_row_of
from serve.deps import Pool, Tenant, access, audit_note, base_url
from serve.errors import problem

router = APIRouter(tags=["UPS-RS"])
DICOM_JSON = "application/dicom+json"
MAX_BODY = 1024 * 1024
_ITEM = Attribute("", "Workitem", "", "workitem", "u.item", "json")
_READ = [Depends(access(Role.READER, AuditAction.QUERY))]
_WRITE = [Depends(access(Role.WRITER, AuditAction.PROCEDURE_STEP))]


async def _dataset(request: Request) -> Dataset:
    """The one dataset of a DICOM JSON body, read within MAX_BODY; WorkitemRefused (400/413/415) if not."""
    if request.headers.get("content-type", "").split(";")[0].strip().lower() not in (DICOM_JSON, "application/json"):
        raise WorkitemRefused(415, f"UPS-RS takes {DICOM_JSON}")
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY:
            raise WorkitemRefused(413, f"the body exceeds {MAX_BODY} bytes")
    try:
        document = json.loads(body)
        objects = document if isinstance(document, list) else [document]
        if len(objects) != 1 or not isinstance(objects[0], dict):
            raise ValueError("the body must hold exactly one DICOM JSON object")
        return Dataset.from_json(objects[0])
    except Exception as err:  # noqa: BLE001 - json and pydicom raise many kinds for malformed input
        raise WorkitemRefused(400, f"not a DICOM JSON workitem: {err}") from None


def _requested_uid(request: Request) -> str | None:
    """`?workitem=UID` as PS3.18's URI template writes it, or the bare `?UID` many clients send."""
    if "workitem" in request.query_params:
        return request.query_params["workitem"]
    bare = [key for key, value in request.query_params.multi_items() if not value]
    return bare[0] if bare else None


@router.post("/dicomweb/workitems", summary="Create a workitem", status_code=201, dependencies=_WRITE)
async def create_workitem(request: Request, pool: Pool, tenant: Tenant) -> Response:
    try:
        ds = await _dataset(request)
        uid = _requested_uid(request) or str(ds.get("SOPInstanceUID", "") or "") or f"2.25.{uuid.uuid4().int}"
        row = new_workitem(ds, uid)
        await workitems.create(pool, tenant, row, worklist_row_of(uid, ds))
    except WorkitemRefused as err:
        return problem(err.status, str(err))
    except workitems.WorkitemExists:
        return problem(409, f"workitem {uid} exists")
    audit_note(request)["workitem"] = uid
    return Response(status_code=201, headers={"Location": f"{base_url(request)}/dicomweb/workitems/{uid}"})


@router.get("/dicomweb/workitems/{uid}", summary="Retrieve a workitem", dependencies=_READ)
async def retrieve_workitem(pool: Pool, tenant: Tenant, uid: str) -> Response:
    stored = await workitems.load(pool, tenant, uid)
    if stored is None:
        return problem(404, f"no workitem {uid}")
    return JSONResponse([stored[0]], media_type=DICOM_JSON)


@router.put("/dicomweb/workitems/{uid}/state", summary="Change a workitem's state", dependencies=_WRITE)
async def change_workitem_state(request: Request, pool: Pool, tenant: Tenant, uid: str) -> Response:
    stored = await workitems.load(pool, tenant, uid)
    if stored is None:
        return problem(404, f"no workitem {uid}")
    try:
        change = await _dataset(request)
        wanted = str(change.get("ProcedureStepState", "") or "")
        transaction = str(change.get("TransactionUID", "") or "") or None
        item = Dataset.from_json(stored[0])
        row = changed_state(item, uid, wanted, transaction, stored[1])
        await workitems.update(pool, tenant, row, worklist_row_of(uid, item))
    except WorkitemRefused as err:
        return problem(err.status, str(err))
    audit_note(request)["workitem"] = uid
    return Response(status_code=200)


def _search_keys(params: dict[str, str]) -> list[MatchKey]:
    keys = []
    for name, value in params.items():
        if name in ("limit", "offset", "includefield", "fuzzymatching"):
            continue
        attribute = WORKITEM_BY_KEYWORD.get(name) or next(
            (a for a in WORKITEM_BY_KEYWORD.values() if a.tag == name.upper()), None
        )
        if attribute is None:
            raise BadQuery(f"{name} is not a workitem search key; supported: {', '.join(sorted(WORKITEM_BY_KEYWORD))}")
        keys.append(MatchKey(attribute, value))
    return keys


@router.get("/dicomweb/workitems", summary="Search for workitems", dependencies=_READ)
async def search_workitems(request: Request, pool: Pool, tenant: Tenant) -> Response:
    params = dict(request.query_params)
    try:
        limit = min(int(params.get("limit", DEFAULT_LIMIT)), MAX_LIMIT)
        offset = int(params.get("offset", 0))
        query = build(QuerySpec("workitem", tenant, _search_keys(params), [_ITEM], limit=limit, offset=offset))
    except (BadQuery, ValueError) as err:
        return problem(400, str(err))
    column = [a.keyword for a in query.returned].index(_ITEM.keyword)
    async with pool.connection() as conn:
        rows = await (await conn.execute(query.sql, query.params)).fetchall()
    body: list[Any] = [row[column] for row in rows[:limit]]
    return JSONResponse(body, media_type=DICOM_JSON)
