"""WADO-RS retrieve of whole objects (study, series, instance) and WADO-URI."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import Response, StreamingResponse

from archive.audit import AuditAction
from archive.blobstore import BlobStore
from archive.identity import Role
from archive.index.reads import StoredObject, find_object_anywhere
from archive.pixels.decode_pool import DecodePool, DecodeRefused
from archive.pixels.render import RenderOptions, render
from archive.pixels.transcode import TARGET_SYNTAX
from serve.decode_gate import DecodeBusy, Waits
from serve.deps import Blobs, DecodeWaits, Pool, Tenant, access
from serve.lookup import check_uids, objects_for
from serve.media import Multipart, NotAcceptable, parse_accept, wanted_part
from serve.wado_pixels import BUSY_RETRY_AFTER, Decoder, decompressed_bytes, decompressed_path, file_chunks, refused

router = APIRouter(tags=["WADO-RS"], dependencies=[Depends(access(Role.READER, AuditAction.READ))])
STREAM_BATCH = 4 * 1024 * 1024


def choose_syntax(request: Request, objects: list[StoredObject]) -> str | None:
    """None = send as stored; else the syntax every object must be sent in (406 if impossible)."""
    for part, syntax in wanted_part(parse_accept(request.headers.get("accept")), "application/dicom"):
        if part not in ("application/dicom", "*/*", "application/*"):
            continue
        if syntax in (None, "*"):
            return None
        if all(o.transfer_syntax == syntax for o in objects):
            return None
        if syntax == TARGET_SYNTAX:
            return TARGET_SYNTAX
    raise NotAcceptable(
        f"acceptable: application/dicom as stored (transfer-syntax=* or none) or decompressed (transfer-syntax={TARGET_SYNTAX})"
    )


async def object_bytes(
    blobs: BlobStore, obj: StoredObject, syntax: str | None, decoder: DecodePool, waits: Waits
) -> AsyncIterator[bytes]:
    if syntax is None or obj.transfer_syntax == syntax:
        iterator = blobs.iter_chunks(obj.blob_key)
        while chunk := await asyncio.to_thread(next, iterator, b""):
            yield chunk
        return
    if obj.transcoded_key:
        yield await asyncio.to_thread(blobs.read_bytes, obj.transcoded_key)
        return
    # the answer has started: a refusal can only end it early (the log says why)
    copy = await decompressed_path(blobs, obj, decoder, waits)
    try:
        chunks = file_chunks(copy, STREAM_BATCH)
        while chunk := await asyncio.to_thread(next, chunks, b""):
            yield chunk
    finally:
        copy.unlink(missing_ok=True)


def _decoded_alone(objects: list[StoredObject], syntax: str | None) -> bool:
    """One object to decompress: done before the answer starts, so a refusal gets its own status."""
    return len(objects) == 1 and syntax not in (None, objects[0].transfer_syntax) and not objects[0].transcoded_key


async def multipart_objects(
    request: Request, blobs: BlobStore, decoder: DecodePool, waits: Waits, objects: list[StoredObject]
) -> Response:
    try:
        syntax = choose_syntax(request, objects)
    except NotAcceptable as err:
        raise HTTPException(406, str(err)) from None
    ready = await decompressed_bytes(blobs, objects[0], decoder, waits) if _decoded_alone(objects, syntax) else None
    multipart = Multipart()

    def part(obj: StoredObject) -> bytes:
        return multipart.head(f"application/dicom; transfer-syntax={syntax or obj.transfer_syntax}")

    def read_batch(batch: list[StoredObject]) -> bytes:
        # one join of every piece: concatenating each part first copied the whole batch twice
        pieces: list[bytes] = []
        for o in batch:
            pieces += (part(o), blobs.read_bytes(o.blob_key), b"\r\n")
        return b"".join(pieces)

    async def body() -> AsyncIterator[bytes]:
        # Each yield crosses from the Serve replica to its proxy as one message, and each thread
        # hop costs: small objects as stored go a few MB per read and per message.
        batch: list[StoredObject] = []
        for obj in objects:
            if syntax is None and obj.size < STREAM_BATCH:
                batch.append(obj)
                if sum(o.size for o in batch) >= STREAM_BATCH:
                    yield await asyncio.to_thread(read_batch, batch)
                    batch = []
                continue
            if batch:
                yield await asyncio.to_thread(read_batch, batch)
                batch = []
            yield part(obj)
            if ready is not None:
                yield ready
            else:
                async for chunk in object_bytes(blobs, obj, syntax, decoder, waits):
                    yield chunk
            yield b"\r\n"
        if batch:
            yield await asyncio.to_thread(read_batch, batch)
        yield multipart.tail()

    return StreamingResponse(body(), media_type=multipart.content_type("application/dicom", syntax or "*"))


@router.get("/dicomweb/studies/{study}", summary="Retrieve a study")
async def retrieve_study(
    request: Request, pool: Pool, blobs: Blobs, decoder: Decoder, waits: DecodeWaits, tenant: Tenant, study: str
) -> Response:
    return await multipart_objects(request, blobs, decoder, waits, await objects_for(pool, tenant, study))


@router.get("/dicomweb/studies/{study}/series/{series}", summary="Retrieve a series")
async def retrieve_series(
    request: Request, pool: Pool, blobs: Blobs, decoder: Decoder, waits: DecodeWaits, tenant: Tenant, study: str, series: str
) -> Response:
    return await multipart_objects(request, blobs, decoder, waits, await objects_for(pool, tenant, study, series))


@router.get("/dicomweb/studies/{study}/series/{series}/instances/{instance}", summary="Retrieve an instance")
async def retrieve_instance(
    request: Request,
    pool: Pool,
    blobs: Blobs,
    decoder: Decoder,
    waits: DecodeWaits,
    tenant: Tenant,
    study: str,
    series: str,
    instance: str,
) -> Response:
    return await multipart_objects(request, blobs, decoder, waits, await objects_for(pool, tenant, study, series, instance))


@router.get("/dicomweb/wado", tags=["WADO-URI"], summary="WADO-URI (PS3.18 chapter 9)")
async def wado_uri(
    pool: Pool,
    blobs: Blobs,
    decoder: Decoder,
    waits: DecodeWaits,
    tenant: Tenant,
    # WADO-URI's own parameter names (PS3.18 9), which FastAPI reads from the query string
    requestType: str,  # noqa: N803
    studyUID: str,  # noqa: N803
    seriesUID: str,  # noqa: N803
    objectUID: str,  # noqa: N803
    contentType: str = "application/dicom",  # noqa: N803
    frameNumber: int = 1,  # noqa: N803
) -> Response:
    if requestType != "WADO":
        raise HTTPException(400, "requestType must be WADO")
    check_uids(studyUID=studyUID, seriesUID=seriesUID, objectUID=objectUID)
    obj = await find_object_anywhere(pool, tenant, objectUID)
    if obj is None or obj.study_uid != studyUID or obj.series_uid != seriesUID:
        raise HTTPException(404, "no such object for this tenant")
    content = contentType.split(",")[0].strip()
    if content in ("application/dicom", "*/*"):
        data = await asyncio.to_thread(blobs.read_bytes, obj.blob_key)
        return Response(data, media_type="application/dicom")
    if content in ("image/jpeg", "image/png"):

        def draw() -> bytes:
            with blobs.local_copy(obj.blob_key) as path:
                return render(decoder, path, frameNumber, RenderOptions(media_type=content))

        try:
            return Response(await waits.run(draw), media_type=content)
        except DecodeRefused as err:
            raise refused(obj, err) from None
        except DecodeBusy as err:
            raise HTTPException(503, str(err), headers={"Retry-After": BUSY_RETRY_AFTER}) from None
    raise HTTPException(406, "contentType must be application/dicom, image/jpeg or image/png")
