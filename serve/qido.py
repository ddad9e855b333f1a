"""QIDO-RS (PS3.18 10.6): studies, series and instances, answered from the index alone."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from archive.qido.query import MAX_LIMIT, BadQuery, build, to_json
from serve.state import BadTenant, get_ingest, tenant_of

router = APIRouter(tags=["QIDO-RS"])
DICOM_JSON = "application/dicom+json"


def _params(request: Request) -> dict[str, list[str]]:
    params: dict[str, list[str]] = {}
    for key, value in request.query_params.multi_items():
        params.setdefault(key, []).append(value)
    return params


async def search(request: Request, level: str, scope: dict[str, str]) -> Response:
    try:
        tenant = tenant_of(request)
        query = build(level, tenant, _params(request), scope)
    except (BadQuery, BadTenant) as err:
        return JSONResponse({"error": str(err)}, status_code=400)
    ingest = await get_ingest(request)
    async with ingest.pool.connection() as conn:
        rows = await (await conn.execute(query.sql, query.params)).fetchall()
    body, more = to_json(query, rows)
    headers = {}
    warnings = list(query.warnings)
    if more:
        warnings.append(f'299 dicomflow "There are more results: use offset={query.offset + query.limit} '
                        f'(limit at most {MAX_LIMIT})"')
    if warnings:
        headers["Warning"] = ", ".join(warnings)
    return JSONResponse(body, media_type=DICOM_JSON, headers=headers)


@router.get("/dicomweb/studies", summary="Search for studies")
async def search_studies(request: Request) -> Response:
    return await search(request, "study", {})


@router.get("/dicomweb/series", summary="Search for series")
async def search_all_series(request: Request) -> Response:
    return await search(request, "series", {})


@router.get("/dicomweb/studies/{study}/series", summary="Search for series of a study")
async def search_series(request: Request, study: str) -> Response:
    return await search(request, "series", {"StudyInstanceUID": study})


@router.get("/dicomweb/instances", summary="Search for instances")
async def search_all_instances(request: Request) -> Response:
    return await search(request, "instance", {})


@router.get("/dicomweb/studies/{study}/instances", summary="Search for instances of a study")
async def search_study_instances(request: Request, study: str) -> Response:
    return await search(request, "instance", {"StudyInstanceUID": study})


@router.get("/dicomweb/studies/{study}/series/{series}/instances", summary="Search for instances of a series")
async def search_series_instances(request: Request, study: str, series: str) -> Response:
    return await search(request, "instance", {"StudyInstanceUID": study, "SeriesInstanceUID": series})
