"""STOW-RS (PS3.18 10.5): multipart/related; type="application/dicom", streamed to the receipt path."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse

from archive.audit import AuditAction
from archive.config.sections import WebSettings
from archive.dicom.attributes import InstanceAttributes
from archive.dicom.dicom_status import CANNOT_UNDERSTAND, is_transient, status_of
from archive.dicom.uids import is_safe_uid
from archive.identity import Role
from archive.services.receipt import Outcome, Receipt
from receiving.ingest import Ingest
from serve.deps import IngestDep, SettingsDep, Tenant, access, audit_note, base_url
from serve.errors import problem, warning
from serve.metrics import STOW_RECEIPTS
from serve.multipart_stream import MalformedBody, MultipartStream, Part, parse_media_type

router = APIRouter(tags=["STOW-RS"], dependencies=[Depends(access(Role.WRITER, AuditAction.STORE))])
DICOM_JSON = "application/dicom+json"
# A Failed SOP Sequence item has no standard attribute for the reason in words (PS3.18 Annex I: the
# references and FailureReason only), so it goes in a reserved private block (PS3.5 7.8.1): the
# creator at (0009,0010) owns (0009,1000-10FF), and (0009,1001) holds the reason.
PRIVATE_CREATOR = "dicomflow"
CREATOR_TAG, REASON_TAG = "00090010", "00091001"
LT_MAX = 10240
RETRY_AFTER_SECONDS = 30  # long enough for a restarted PostgreSQL or blob store, short for a modality's queue


def _check_request(request: Request, max_bytes: int) -> str | JSONResponse:
    """The boundary, or the 4xx answer a malformed request gets before any byte is stored."""
    media = parse_media_type(request.headers.get("content-type", ""))
    if media.essence != "multipart/related":
        return problem(415, f'STOW-RS takes multipart/related; type="application/dicom", not {media.essence or "nothing"}')
    part_type = media.params.get("type", "application/dicom").lower()
    if part_type != "application/dicom":
        return problem(415, f'only type="application/dicom" parts are accepted, not {part_type!r}')
    boundary = media.params.get("boundary")
    if not boundary:
        return problem(400, "the Content-Type has no boundary parameter")
    length = request.headers.get("content-length")
    if length and length.isdigit() and int(length) > max_bytes:
        return problem(413, f"the body is {length} bytes; this archive takes at most {max_bytes} per request (stow_max_bytes)")
    return boundary


async def _read_body(request: Request, stream: MultipartStream, max_bytes: int, max_parts: int) -> JSONResponse | None:
    received = 0
    async for chunk in request.stream():
        received += len(chunk)
        if received > max_bytes:
            return problem(413, f"the body exceeds {max_bytes} bytes (stow_max_bytes)")
        stream.feed(chunk)
        if len(stream.parts) > max_parts:  # each part is a spool file: stop before there are too many
            return problem(413, f"the body has more than {max_parts} parts; send at most that many per request (stow_max_parts)")
    stream.finish()
    return None


def _referenced(a: InstanceAttributes, base: str) -> dict:
    return {
        "00081150": {"vr": "UI", "Value": [a.sop_class_uid]},
        "00081155": {"vr": "UI", "Value": [a.sop_uid]},
        "00081190": {"vr": "UR", "Value": [f"{base}/studies/{a.study_uid}/series/{a.series_uid}/instances/{a.sop_uid}"]},
    }


def _failed(receipt: Receipt | None, code: int, reason: str) -> dict:
    item: dict = {}
    if receipt is not None and receipt.attributes is not None:
        item["00081150"] = {"vr": "UI", "Value": [receipt.attributes.sop_class_uid]}
        item["00081155"] = {"vr": "UI", "Value": [receipt.attributes.sop_uid]}
    item["00081197"] = {"vr": "US", "Value": [code]}
    item[CREATOR_TAG] = {"vr": "LO", "Value": [PRIVATE_CREATOR]}
    item[REASON_TAG] = {"vr": "LT", "Value": [reason[:LT_MAX]]}
    return item


def response_status(stored: int, failure_reasons: list[int], over_quota: bool = False) -> tuple[int, dict[str, str]]:
    """The HTTP status and extra headers (PS3.18 10.5.3.1): 200 all stored, 202 some, 409 none.
    When none stored and any part failed because the index or blob store was down (A7xx), 503 with
    Retry-After instead: sent again later, those parts may store, and a 409 tells clients not to.
    When none stored because the tenant is over its storage quota, 413."""
    if not failure_reasons:
        return 200, {}
    if stored:
        return 202, {}
    if over_quota:
        return 413, {}
    if any(is_transient(code) for code in failure_reasons):
        return 503, {"Retry-After": str(RETRY_AFTER_SECONDS)}
    return 409, {}


RECEIPTS_AT_ONCE = 8  # parts of one request are independent: overlap their fsyncs and index writes


async def _receive_part(ingest: Ingest, tenant: str, part: Part, study: str | None, gate: asyncio.Semaphore) -> Receipt | None:
    assert part.staged is not None  # MultipartStream.finish() saw every part end
    if part.content_type not in ("application/dicom", ""):
        ingest.blobs.discard(part.staged)
        return None
    async with gate:
        return await ingest.receive(tenant, part.staged, "stow-rs", expect_study_uid=study)


async def _store_parts(request: Request, ingest: Ingest, tenant: str, parts: list[Part], study: str | None) -> JSONResponse:
    base = base_url(request) + "/dicomweb"
    gate = asyncio.Semaphore(RECEIPTS_AT_ONCE)
    receipts = await asyncio.gather(*(_receive_part(ingest, tenant, p, study, gate) for p in parts))
    referenced, failed, studies = [], [], set()
    for part, receipt in zip(parts, receipts):
        STOW_RECEIPTS.labels(outcome=receipt.outcome.value if receipt else "invalid").inc()
        if receipt is None:
            failed.append(_failed(None, CANNOT_UNDERSTAND, f"part of type {part.content_type} is not application/dicom"))
        elif receipt.outcome.ok:
            assert receipt.attributes is not None  # every ok outcome carries them
            referenced.append(_referenced(receipt.attributes, base))
            studies.add((tenant, receipt.attributes.study_uid))
        else:
            failed.append(_failed(receipt, status_of(receipt), receipt.reason or receipt.outcome.value))
    audit_note(request)["detail"] = {
        "stored": len(referenced),
        "failed": len(failed),
        "studies": sorted(s for _, s in studies)[:100],
    }
    over_quota = any(r is not None and r.outcome is Outcome.QUOTA for r in receipts)
    return _response(base, referenced, failed, {s for _, s in studies}, over_quota)


def _response(base: str, referenced: list[dict], failed: list[dict], studies: set[str], over_quota: bool = False) -> JSONResponse:
    body: dict = {}
    if len(studies) == 1:
        body["00081190"] = {"vr": "UR", "Value": [f"{base}/studies/{next(iter(studies))}"]}
    if referenced:
        body["00081199"] = {"vr": "SQ", "Value": referenced}
    if failed:
        body["00081198"] = {"vr": "SQ", "Value": failed}
    status, headers = response_status(len(referenced), [item["00081197"]["Value"][0] for item in failed], over_quota)
    if failed:
        first = failed[0][REASON_TAG]["Value"][0]
        headers["Warning"] = warning(
            base,
            f"{len(failed)} of {len(failed) + len(referenced)} instances not stored "
            f"(Failed SOP Sequence has each FailureReason); first: {first}",
        )
    return JSONResponse(body, status_code=status, media_type=DICOM_JSON, headers=headers)


async def stow(request: Request, ingest: Ingest, tenant: str, web: WebSettings, study: str | None = None) -> JSONResponse:
    max_bytes = web.stow_max_bytes
    if study is not None and not is_safe_uid(study):
        return problem(400, f"{study!r} in the path is not a valid Study Instance UID")
    checked = _check_request(request, max_bytes)
    if isinstance(checked, JSONResponse):
        return checked
    stream = MultipartStream(checked, ingest.blobs)
    try:
        refusal = await _read_body(request, stream, max_bytes, web.stow_max_parts)
        if refusal is not None:
            stream.discard()
            return refusal
    except MalformedBody as err:
        stream.discard()
        return problem(400, str(err))
    except BaseException:
        await asyncio.to_thread(stream.discard)
        raise
    return await _store_parts(request, ingest, tenant, stream.parts, study)


@router.post("/dicomweb/studies", summary="Store instances (STOW-RS)")
async def stow_studies(request: Request, ingest: IngestDep, tenant: Tenant, settings: SettingsDep) -> JSONResponse:
    return await stow(request, ingest, tenant, settings.web)


@router.post("/dicomweb/studies/{study}", summary="Store instances of one study (STOW-RS)")
async def stow_study(request: Request, ingest: IngestDep, tenant: Tenant, settings: SettingsDep, study: str) -> JSONResponse:
    return await stow(request, ingest, tenant, settings.web, study)


@router.post("/stow-rs/v1/studies", summary="Store instances (the seed's path; tenant from x-tenant)")
async def stow_seed_path(request: Request, ingest: IngestDep, tenant: Tenant, settings: SettingsDep) -> JSONResponse:
    return await stow(request, ingest, tenant, settings.web)
