"""QIDO-RS (PS3.18 10.6): studies, series and instances, answered from the index alone."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response

from archive.audit import AuditAction
from archive.identity import Role
from archive.query.builder import BadQuery
from archive.query.qido import MAX_LIMIT, build_qido, to_json
from serve.deps import Pool, Tenant, access, audit_note, base_url
from serve.errors import problem, warning

router = APIRouter(tags=["QIDO-RS"], dependencies=[Depends(access(Role.READER, AuditAction.QUERY))])
DICOM_JSON = "application/dicom+json"


def _params(request: Request) -> dict[str, list[str]]:
    params: dict[str, list[str]] = {}
    for key, value in request.query_params.multi_items():
        params.setdefault(key, []).append(value)
    return params


async def search(request: Request, pool: Pool, tenant: Tenant, level: str, scope: dict[str, str]) -> Response:
    params = _params(request)
    audit_note(request)["query"] = {k: v[-1] for k, v in params.items()}
    try:
        query = build_qido(level, tenant, params, scope)
    except BadQuery as err:
        return problem(400, str(err))
    async with pool.connection() as conn:
        rows = await (await conn.execute(query.sql, query.params)).fetchall()
    body, more = to_json(query, rows)
    headers = {}
    warnings = list(query.warnings)
    if more:
        assert query.limit is not None  # to_json finds more rows only against a limit
        warnings.append(f"There are more results: use offset={query.offset + query.limit} (limit at most {MAX_LIMIT})")
    if warnings:
        headers["Warning"] = warning(base_url(request), *warnings)
    return JSONResponse(body, media_type=DICOM_JSON, headers=headers)


@router.get("/dicomweb/studies", summary="Search for studies")
async def search_studies(request: Request, pool: Pool, tenant: Tenant) -> Response:
    return await search(request, pool, tenant, "study", {})


@router.get("/dicomweb/series", summary="Search for series")
async def search_all_series(request: Request, pool: Pool, tenant: Tenant) -> Response:
    return await search(request, pool, tenant, "series", {})


@router.get("/dicomweb/studies/{study}/series", summary="Search for series of a study")
async def search_series(request: Request, pool: Pool, tenant: Tenant, study: str) -> Response:
    return await search(request, pool, tenant, "series", {"StudyInstanceUID": study})


@router.get("/dicomweb/instances", summary="Search for instances")
async def search_all_instances(request: Request, pool: Pool, tenant: Tenant) -> Response:
    return await search(request, pool, tenant, "instance", {})


@router.get("/dicomweb/studies/{study}/instances", summary="Search for instances of a study")
async def search_study_instances(request: Request, pool: Pool, tenant: Tenant, study: str) -> Response:
    return await search(request, pool, tenant, "instance", {"StudyInstanceUID": study})


@router.get("/dicomweb/studies/{study}/series/{series}/instances", summary="Search for instances of a series")
async def search_series_instances(request: Request, pool: Pool, tenant: Tenant, study: str, series: str) -> Response:
    return await search(request, pool, tenant, "instance", {"StudyInstanceUID": study, "SeriesInstanceUID": series})
