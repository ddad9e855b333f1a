"""WADO-RS pixels: frames, rendered images, thumbnails and bulk data."""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Annotated, TypeVar

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import Response
from pydicom import dcmread

from archive.audit import AuditAction
from archive.blobstore import BlobStore
from archive.identity import Role
from archive.index.reads import StoredObject
from archive.pixels.decode_pool import DecodePool, DecodeRefused, shared_pool
from archive.pixels.frame_list import BadFrameList, parse_frame_list
from archive.pixels.frames import FRAME_MEDIA_TYPES, FrameNotFound, NoPixelData, decode_frames
from archive.pixels.render import RenderOptions, render
from archive.pixels.transcode import uncompressed_copy
from serve.decode_gate import DecodeBusy, Waits
from serve.deps import Blobs, DecodeWaits, Pool, SettingsDep, Tenant, access
from serve.frame_stream import OpenedFrames, frame_response
from serve.lookup import objects_for
from serve.media import Multipart, parse_accept, wanted_part

T = TypeVar("T")
log = logging.getLogger("dicomflow.pixels")
router = APIRouter(tags=["WADO-RS"], dependencies=[Depends(access(Role.READER, AuditAction.READ))])
INSTANCE = "/dicomweb/studies/{study}/series/{series}/instances/{instance}"
NATIVE = "1.2.840.10008.1.2.1"


async def _decoder(settings: SettingsDep) -> DecodePool:
    return shared_pool(settings.decode.pool_limits)


# this replica's decode workers (archive/pixels/decode_pool.py), started on first use
Decoder = Annotated[DecodePool, Depends(_decoder)]


# PS3.18's retrieve statuses where they fit: 413 when the answer cannot be made within the
# server's limit. A broken stream is 422: the request is fine, the object is not. A decode out of
# time is 503 (PS3.18 lists it; "temporary or permanent"), not 504: that is what a proxy in front
# (HAProxy with `timeout server`) answers when a replica is slow, and the two should stay apart.
REFUSAL_STATUS = {"too_large": 413, "undecodable": 422, "crashed": 422, "timeout": 503, "busy": 503, "unavailable": 503}
BUSY_RETRY_AFTER = "5"


def refused(obj: StoredObject, err: DecodeRefused) -> HTTPException:
    log.warning("decoding %s refused (%s): %s", obj.sop_uid, err.reason, err)
    headers = {"Retry-After": BUSY_RETRY_AFTER} if err.reason == "busy" else None
    return HTTPException(REFUSAL_STATUS[err.reason], f"cannot decode this instance: {err}", headers=headers)


async def _on_disk(blobs: BlobStore, obj: StoredObject, work: Callable[[Path], T], waits: Waits) -> T:
    def run() -> T:
        with blobs.local_copy(obj.blob_key) as path:
            return work(path)

    return await _answered(obj, waits.run(run))


async def _answered(obj: StoredObject, pending: Awaitable[T]) -> T:
    """The work's answer, its refusals turned into the HTTP errors that say why."""
    try:
        return await pending
    except BadFrameList as err:
        raise HTTPException(400, str(err)) from None
    except (FrameNotFound, NoPixelData) as err:
        raise HTTPException(404, str(err)) from None
    except DecodeRefused as err:
        raise refused(obj, err) from None
    except DecodeBusy as err:
        log.warning("decoding %s not admitted: %s", obj.sop_uid, err)
        raise HTTPException(503, str(err), headers={"Retry-After": BUSY_RETRY_AFTER}) from None


def decompressed_file(blobs: BlobStore, obj: StoredObject, decoder: DecodePool) -> Path:
    """A spool file with the object in Explicit VR Little Endian, made by the decode pool (or
    DecodeRefused); the caller deletes it."""
    target = blobs.new_spool_file()
    try:
        with blobs.local_copy(obj.blob_key) as path:
            uncompressed_copy(decoder, path, target)
    except BaseException:
        target.unlink(missing_ok=True)
        raise
    return target


async def decompressed_path(blobs: BlobStore, obj: StoredObject, decoder: DecodePool, waits: Waits) -> Path:
    """decompressed_file, or the HTTP error that says why not."""
    return await _answered(obj, waits.run(lambda: decompressed_file(blobs, obj, decoder)))


async def decompressed_bytes(blobs: BlobStore, obj: StoredObject, decoder: DecodePool, waits: Waits) -> bytes:
    """The whole object decompressed, or the HTTP error that says why not."""

    def run() -> bytes:
        copy = decompressed_file(blobs, obj, decoder)
        try:
            return copy.read_bytes()
        finally:
            copy.unlink(missing_ok=True)

    return await _answered(obj, waits.run(run))


def file_chunks(path: Path, size: int) -> Iterator[bytes]:
    with open(path, "rb") as f:
        while chunk := f.read(size):
            yield chunk


def _frame_plan(request: Request, stored_syntax: str) -> tuple[bool, str]:
    """(send as stored?, part content type) from the Accept header, or 406."""
    stored_type = FRAME_MEDIA_TYPES.get(stored_syntax)
    for part, syntax in wanted_part(parse_accept(request.headers.get("accept")), "application/octet-stream"):
        if part in ("application/octet-stream", "*/*"):
            if syntax == "*" or (syntax == stored_syntax and stored_type):
                return True, f"application/octet-stream; transfer-syntax={stored_syntax}"
            if syntax in (None, NATIVE):
                return False, f"application/octet-stream; transfer-syntax={NATIVE}"
        elif stored_type and part == stored_type and syntax in (None, "*", stored_syntax):
            return True, f"{stored_type}; transfer-syntax={stored_syntax}"
    raise HTTPException(
        406, f"frames of this instance are available as application/octet-stream{' or ' + stored_type if stored_type else ''}"
    )


@router.get(INSTANCE + "/frames/{frames}", summary="Retrieve frames")
async def retrieve_frames(
    request: Request,
    pool: Pool,
    blobs: Blobs,
    decoder: Decoder,
    waits: DecodeWaits,
    settings: SettingsDep,
    tenant: Tenant,
    study: str,
    series: str,
    instance: str,
    frames: str,
) -> Response:
    try:
        numbers = parse_frame_list(frames)
    except BadFrameList as err:
        raise HTTPException(400, str(err)) from None
    obj = (await objects_for(pool, tenant, study, series, instance))[0]
    as_stored, part_type = _frame_plan(request, obj.transfer_syntax)
    opened = await _answered(obj, asyncio.to_thread(OpenedFrames, blobs, obj.blob_key, numbers))
    try:
        produce, syntax = _frame_maker(opened, as_stored, decoder, waits, settings.decode.timeout_seconds)
        first = await _answered(obj, produce(opened.batches[0]))
    except BaseException:
        opened.close()
        raise
    return frame_response(first, opened, produce, part_type, lambda m: m.content_type(part_type.split(";")[0], syntax))


def _frame_maker(
    opened: OpenedFrames, as_stored: bool, decoder: DecodePool, waits: Waits, budget: float
) -> tuple[Callable[[list[int]], Awaitable[list[bytes]]], str]:
    """(what makes a batch of frames, the transfer syntax they are in). As stored, and native
    frames, are read here; only compressed frames to be sent decoded go to the decode pool, all
    within one time budget for the whole request."""
    if as_stored or not opened.reader.syntax.is_encapsulated:
        return (lambda numbers: asyncio.to_thread(opened.stored, numbers)), opened.reader.transfer_syntax
    deadline = time.monotonic() + budget
    path = str(opened.path)

    def decode(numbers: list[int]) -> list[bytes]:
        return decoder.run(decode_frames, path, numbers, deadline=deadline).frames

    return (lambda numbers: waits.run(lambda: decode(numbers))), NATIVE


MAX_VIEWPORT = 4096  # a rendered image is for a screen; larger asks only cost memory
_NUMBERS = "window=center,width[,function], viewport=width,height and quality=1..100 are numbers"


def _window(value: str | None) -> tuple[float, float] | None:
    if value is None:
        return None
    parts = [float(v) for v in value.split(",")[:2]]
    if len(parts) != 2 or parts[1] <= 0:
        raise HTTPException(400, "window needs a center and a positive width")
    return parts[0], parts[1]


def _viewport(value: str | None, default: tuple[int, int] | None) -> tuple[int, int] | None:
    if value is None:
        return default
    parts = [int(v) for v in value.split(",")[:2]]
    if len(parts) != 2 or not all(0 < v <= MAX_VIEWPORT for v in parts):
        raise HTTPException(400, f"viewport needs a width and a height, each 1..{MAX_VIEWPORT}")
    return parts[0], parts[1]


def _render_options(request: Request, default_viewport: tuple[int, int] | None = None) -> RenderOptions:
    accept = [p for p, _ in wanted_part(parse_accept(request.headers.get("accept")), "image/jpeg")]
    media = next((m for m in accept if m in ("image/jpeg", "image/png")), None)
    if media is None and not any(m in ("*/*", "image/*") for m in accept):
        raise HTTPException(406, "rendered images are image/jpeg or image/png")
    q = request.query_params
    try:
        window, viewport = _window(q.get("window")), _viewport(q.get("viewport"), default_viewport)
        quality = int(q.get("quality", 90))
    except ValueError:
        raise HTTPException(400, _NUMBERS) from None
    return RenderOptions(media or "image/jpeg", window, viewport, max(1, min(quality, 100)))


async def _rendered(
    blobs: BlobStore, decoder: DecodePool, obj: StoredObject, frame: int, options: RenderOptions, waits: Waits
) -> Response:
    image = await _on_disk(blobs, obj, lambda path: render(decoder, path, frame, options), waits)
    return Response(image, media_type=options.media_type)


@router.get(INSTANCE + "/rendered", summary="Rendered instance")
async def rendered_instance(
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
    obj = (await objects_for(pool, tenant, study, series, instance))[0]
    return await _rendered(blobs, decoder, obj, 1, _render_options(request), waits)


@router.get(INSTANCE + "/frames/{frame}/rendered", summary="Rendered frame")
async def rendered_frame(
    request: Request,
    pool: Pool,
    blobs: Blobs,
    decoder: Decoder,
    waits: DecodeWaits,
    tenant: Tenant,
    study: str,
    series: str,
    instance: str,
    frame: int,
) -> Response:
    obj = (await objects_for(pool, tenant, study, series, instance))[0]
    return await _rendered(blobs, decoder, obj, frame, _render_options(request), waits)


@router.get(INSTANCE + "/thumbnail", summary="Instance thumbnail")
async def thumbnail_instance(
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
    obj = (await objects_for(pool, tenant, study, series, instance))[0]
    return await _rendered(blobs, decoder, obj, 1, _render_options(request, (128, 128)), waits)


@router.get("/dicomweb/studies/{study}/series/{series}/thumbnail", summary="Series thumbnail")
async def thumbnail_series(
    request: Request, pool: Pool, blobs: Blobs, decoder: Decoder, waits: DecodeWaits, tenant: Tenant, study: str, series: str
) -> Response:
    objects = await objects_for(pool, tenant, study, series)
    return await _rendered(blobs, decoder, objects[len(objects) // 2], 1, _render_options(request, (128, 128)), waits)


@router.get("/dicomweb/studies/{study}/thumbnail", summary="Study thumbnail")
async def thumbnail_study(
    request: Request, pool: Pool, blobs: Blobs, decoder: Decoder, waits: DecodeWaits, tenant: Tenant, study: str
) -> Response:
    objects = await objects_for(pool, tenant, study)
    return await _rendered(blobs, decoder, objects[len(objects) // 2], 1, _render_options(request, (128, 128)), waits)


_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


# a tag, or sequence tag / item index pairs then a tag, as archive/dicom_json's BulkDataURIs name them
_ELEMENT_PATH = re.compile(r"[0-9A-Fa-f]{8}(/\d{1,6}/[0-9A-Fa-f]{8}){0,16}")


def _element_bytes(path: Path, place: list[str]) -> bytes:
    ds = dcmread(path)
    for depth in range(0, len(place) - 1, 2):
        sequence, index = int(place[depth], 16), int(place[depth + 1])
        items = ds[sequence].value if sequence in ds and ds[sequence].VR == "SQ" else []
        if index >= len(items):
            raise NoPixelData(f"the instance has no item {index} in {'/'.join(place[: depth + 1])}")
        ds = items[index]
    tag = int(place[-1], 16)
    if tag not in ds:
        raise NoPixelData(f"the instance has no element {'/'.join(place)}")
    value = ds[tag].value
    return value if isinstance(value, bytes) else str(value).encode()


@router.get(INSTANCE + "/bulkdata/{element:path}", summary="Bulk data of an element (BulkDataURI)")
async def bulkdata(
    request: Request, pool: Pool, blobs: Blobs, tenant: Tenant, study: str, series: str, instance: str, element: str
) -> Response:
    if not _ELEMENT_PATH.fullmatch(element):
        raise HTTPException(
            400, "the bulk data path is an 8-digit hex tag, after sequence tag / item index pairs for an element in a sequence"
        )
    obj = (await objects_for(pool, tenant, study, series, instance))[0]
    data = await _on_disk(blobs, obj, lambda path: _element_bytes(path, element.split("/")), Waits())
    accept = parse_accept(request.headers.get("accept"))
    single_part = any(m.essence == "application/octet-stream" for m in accept)
    match = _RANGE.match(request.headers.get("range", ""))
    if not single_part:  # PS3.18 8.7.3: multipart/related; type="application/octet-stream" by default
        multipart = Multipart()
        return Response(
            multipart.whole([("application/octet-stream", data)]), media_type=multipart.content_type("application/octet-stream")
        )
    if not match:
        return Response(data, media_type="application/octet-stream", headers={"Accept-Ranges": "bytes"})
    start_text, end_text = match.groups()
    if not start_text and not end_text:
        raise HTTPException(416, "empty range")
    start = int(start_text) if start_text else max(0, len(data) - int(end_text))
    end = min(int(end_text), len(data) - 1) if start_text and end_text else len(data) - 1
    if start >= len(data) or start > end:
        return Response(status_code=416, headers={"Content-Range": f"bytes */{len(data)}"})
    return Response(
        data[start : end + 1],
        status_code=206,
        media_type="application/octet-stream",
        headers={"Content-Range": f"bytes {start}-{end}/{len(data)}", "Accept-Ranges": "bytes"},
    )
