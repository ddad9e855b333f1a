"""STOW-RS (PS3.18 10.5): multipart/related; type="application/dicom", streamed to the receipt path."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from archive.receipt import Outcome, Receipt
from archive.uids import is_valid_uid
from serve.multipart_stream import MalformedBody, MultipartStream, Part, parse_media_type
from serve.state import BadTenant, base_url, get_ingest, tenant_of

router = APIRouter(tags=["STOW-RS"])
DICOM_JSON = "application/dicom+json"

# PS3.18 Table 10.5.3-1 uses the C-STORE failure codes
FAILURE_CODE = {
    Outcome.CONFLICT: 0x0111,
    Outcome.INVALID: 0xC000,
    Outcome.MISMATCH: 0xA900,
    Outcome.FAILED: 0xA700,
}
NOT_DICOM = 0xC000


def problem(status: int, reason: str) -> JSONResponse:
    return JSONResponse({"error": reason}, status_code=status)


def _check_request(request: Request, max_bytes: int) -> str | JSONResponse:
    """The boundary, or the 4xx answer a malformed request gets before any byte is stored."""
    media = parse_media_type(request.headers.get("content-type", ""))
    if media.essence != "multipart/related":
        return problem(415, f"STOW-RS takes multipart/related; type=\"application/dicom\", not {media.essence or 'nothing'}")
    part_type = media.params.get("type", "application/dicom").lower()
    if part_type != "application/dicom":
        return problem(415, f"only type=\"application/dicom\" parts are accepted, not {part_type!r}")
    boundary = media.params.get("boundary")
    if not boundary:
        return problem(400, "the Content-Type has no boundary parameter")
    length = request.headers.get("content-length")
    if length and length.isdigit() and int(length) > max_bytes:
        return problem(413, f"the body is {length} bytes; this archive takes at most {max_bytes} per request (stow_max_bytes)")
    return boundary


async def _read_body(request: Request, stream: MultipartStream, max_bytes: int) -> JSONResponse | None:
    received = 0
    async for chunk in request.stream():
        received += len(chunk)
        if received > max_bytes:
            return problem(413, f"the body exceeds {max_bytes} bytes (stow_max_bytes)")
        stream.feed(chunk)
    stream.finish()
    return None


def _referenced(receipt: Receipt, base: str) -> dict:
    a = receipt.attributes
    return {
        "00081150": {"vr": "UI", "Value": [a.sop_class_uid]},
        "00081155": {"vr": "UI", "Value": [a.sop_uid]},
        "00081190": {"vr": "UR", "Value": [f"{base}/studies/{a.study_uid}/series/{a.series_uid}/instances/{a.sop_uid}"]},
    }


def _failed(receipt: Receipt | None, code: int, reason: str) -> dict:
    item: dict = {"00081197": {"vr": "US", "Value": [code]}, "00090097": {"vr": "LO", "Value": [reason[:64]]}}
    if receipt is not None and receipt.attributes is not None:
        item["00081150"] = {"vr": "UI", "Value": [receipt.attributes.sop_class_uid]}
        item["00081155"] = {"vr": "UI", "Value": [receipt.attributes.sop_uid]}
    return item


RECEIPTS_AT_ONCE = 8  # parts of one request are independent: overlap their fsyncs and index writes


async def _receive_part(ingest, tenant: str, part: Part, study: str | None, gate: asyncio.Semaphore) -> Receipt | None:
    if part.content_type not in ("application/dicom", ""):
        ingest.blobs.discard(part.staged)
        return None
    async with gate:
        return await ingest.receive(tenant, part.staged, "stow-rs", expect_study_uid=study)


async def _store_parts(request: Request, tenant: str, parts: list[Part], study: str | None) -> JSONResponse:
    ingest = await get_ingest(request)
    base = base_url(request) + "/dicomweb"
    gate = asyncio.Semaphore(RECEIPTS_AT_ONCE)
    receipts = await asyncio.gather(*(_receive_part(ingest, tenant, p, study, gate) for p in parts))
    referenced, failed, studies = [], [], set()
    for part, receipt in zip(parts, receipts):
        if receipt is None:
            failed.append(_failed(None, NOT_DICOM, f"part of type {part.content_type} is not application/dicom"))
        elif receipt.outcome.ok:
            referenced.append(_referenced(receipt, base))
            studies.add((tenant, receipt.attributes.study_uid))
        else:
            failed.append(_failed(receipt, FAILURE_CODE[receipt.outcome], receipt.reason or receipt.outcome.value))
    await ingest.flush(studies)
    body: dict = {}
    if len({s for _, s in studies}) == 1:
        body["00081190"] = {"vr": "UR", "Value": [f"{base}/studies/{next(iter(studies))[1]}"]}
    if referenced:
        body["00081199"] = {"vr": "SQ", "Value": referenced}
    if failed:
        body["00081198"] = {"vr": "SQ", "Value": failed}
    status = 200 if not failed else 202 if referenced else 409
    return JSONResponse(body, status_code=status, media_type=DICOM_JSON)


async def stow(request: Request, study: str | None = None) -> JSONResponse:
    settings = request.app.state.settings
    try:
        tenant = tenant_of(request)
    except BadTenant as err:
        return problem(400, str(err))
    if study is not None and not is_valid_uid(study):
        return problem(400, f"{study!r} in the path is not a valid Study Instance UID")
    checked = _check_request(request, settings.stow_max_bytes)
    if isinstance(checked, JSONResponse):
        return checked
    ingest = await get_ingest(request)
    stream = MultipartStream(checked, ingest.blobs)
    try:
        refusal = await _read_body(request, stream, settings.stow_max_bytes)
        if refusal is not None:
            stream.discard()
            return refusal
    except MalformedBody as err:
        stream.discard()
        return problem(400, str(err))
    except BaseException:
        await asyncio.to_thread(stream.discard)
        raise
    return await _store_parts(request, tenant, stream.parts, study)


@router.post("/dicomweb/studies", summary="Store instances (STOW-RS)")
async def stow_studies(request: Request) -> JSONResponse:
    return await stow(request)


@router.post("/dicomweb/studies/{study}", summary="Store instances of one study (STOW-RS)")
async def stow_study(request: Request, study: str) -> JSONResponse:
    return await stow(request, study)


@router.post("/stow-rs/v1/studies", summary="Store instances (the seed's path; tenant from x-tenant)")
async def stow_seed_path(request: Request) -> JSONResponse:
    return await stow(request)
