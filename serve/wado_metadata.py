"""WADO-RS metadata from the pre-generated series documents (gzip, ETag, Redis), built on the fly
when a series is not generated yet or has changed since. What is fresh is decided by the series'
version, which every replace, repair and delete moves (counts alone can come back to where they
were), and its number of instances, which every store moves."""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import json

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import Response

from archive.audit import AuditAction
from archive.blobstore import BlobNotFound
from archive.cache import Cache
from archive.dicom.dicom_json import DICOMWEB_ROOT, file_json, instance_base
from archive.identity import Role
from archive.index.reads import SeriesMetadata, find_objects, series_of_study
from archive.resources import Resources
from serve.deps import ResourcesDep, Tenant, access, base_url
from serve.lookup import check_uids

router = APIRouter(tags=["WADO-RS"], dependencies=[Depends(access(Role.READER, AuditAction.READ))])
RELATIVE_ROOT = f'"{DICOMWEB_ROOT}/'.encode()


async def _series_document(resources: Resources, tenant: str, study: str, meta: SeriesMetadata) -> bytes:
    """The series' JSON array, uncompressed, with BulkDataURIs relative to the server root."""
    blobs = resources.blobs
    if meta.document_fresh and meta.metadata_key:
        try:
            return gzip.decompress(await asyncio.to_thread(blobs.read_bytes, meta.metadata_key))
        except BlobNotFound:  # gone behind the index's back: the instances still say it all
            pass
    objects = await find_objects(resources.pool, tenant, study, meta.series_uid)

    def build() -> bytes:
        documents = []
        for obj in objects:
            with blobs.local_copy(obj.blob_key) as path:
                documents.append(file_json(path, instance_base(DICOMWEB_ROOT, study, obj.series_uid, obj.sop_uid)))
        return json.dumps(documents, separators=(",", ":")).encode()

    return await asyncio.to_thread(build)


def _merge(arrays: list[bytes]) -> bytes:
    inner = [a.strip()[1:-1] for a in arrays if a.strip() not in (b"[]", b"")]
    return b"[" + b",".join(inner) + b"]"


async def metadata_response(
    request: Request, resources: Resources, tenant: str, study: str, series: str | None, instance: str | None
) -> Response:
    check_uids(study=study, series=series, instance=instance)
    metas = await series_of_study(resources.pool, tenant, study, series)
    if not metas or all(m.live_count == 0 for m in metas):
        raise HTTPException(404, "no such study or series for this tenant")
    base = base_url(request)
    version = ",".join(
        f"{m.series_uid}:{m.version}:{m.live_count}:{m.metadata_state if m.document_fresh else 'live'}" for m in metas
    )
    etag = '"' + hashlib.sha1(f"{base}|{study}|{series}|{instance}|{version}".encode()).hexdigest() + '"'
    if request.headers.get("if-none-match") == etag:
        return Response(status_code=304, headers={"ETag": etag})
    cache = resources.cache
    key = ("metadata", study, etag.strip('"'))
    packed = await cache.get(tenant, *key)
    if packed is None:
        body = _merge([await _series_document(resources, tenant, study, m) for m in metas])
        if instance is not None:
            body = _only_instance(body, instance)
        body = body.replace(RELATIVE_ROOT, f'"{base}/dicomweb/'.encode())
        packed = await asyncio.to_thread(gzip.compress, body, 5)
        await cache.set(tenant, *key, value=packed)
    headers = {"ETag": etag, "Cache-Control": "private, max-age=0, must-revalidate", "Vary": "Accept-Encoding"}
    if "gzip" in request.headers.get("accept-encoding", ""):
        headers["Content-Encoding"] = "gzip"
        return Response(packed, media_type="application/dicom+json", headers=headers)
    return Response(await asyncio.to_thread(gzip.decompress, packed), media_type="application/dicom+json", headers=headers)


async def forget_metadata(cache: Cache, tenant: str, study: str) -> None:
    await cache.delete_prefix(tenant, "metadata", study)


def _only_instance(body: bytes, instance: str) -> bytes:
    documents = [d for d in json.loads(body) if d.get("00080018", {}).get("Value", [None])[0] == instance]
    if not documents:
        raise HTTPException(404, "no such instance for this tenant")
    return json.dumps(documents, separators=(",", ":")).encode()


@router.get("/dicomweb/studies/{study}/metadata", summary="Study metadata")
async def study_metadata(request: Request, resources: ResourcesDep, tenant: Tenant, study: str) -> Response:
    return await metadata_response(request, resources, tenant, study, None, None)


@router.get("/dicomweb/studies/{study}/series/{series}/metadata", summary="Series metadata")
async def series_metadata(request: Request, resources: ResourcesDep, tenant: Tenant, study: str, series: str) -> Response:
    return await metadata_response(request, resources, tenant, study, series, None)


@router.get("/dicomweb/studies/{study}/series/{series}/instances/{instance}/metadata", summary="Instance metadata")
async def instance_metadata(
    request: Request, resources: ResourcesDep, tenant: Tenant, study: str, series: str, instance: str
) -> Response:
    return await metadata_response(request, resources, tenant, study, series, instance)
