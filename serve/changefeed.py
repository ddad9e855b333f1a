"""The change feed, in the shape of Microsoft's DICOM service (v1): `GET .../changefeed?offset=&limit=
&includemetadata=` lists what changed after sequence `offset`; `GET .../changefeed/latest` the last
change. Field names are theirs, so their clients and DICOMcast-style consumers read it unmodified;
`SopClassUid` is ours besides (a consumer that wants one kind of object need not fetch metadata)."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from fastapi.responses import JSONResponse

from archive.audit import AuditAction
from archive.blobstore import BlobNotFound, BlobStore
from archive.dicom.dicom_json import DICOMWEB_ROOT, file_json, instance_base
from archive.identity import Role
from archive.index.change_feed import Change, latest_change, read_changes
from archive.index.reads import find_object_anywhere
from serve.deps import Blobs, Pool, Tenant, access

router = APIRouter(tags=["Change feed"], dependencies=[Depends(access(Role.READER, AuditAction.QUERY))])
DEFAULT_LIMIT = 10
MAX_LIMIT = 100


async def _metadata(pool: Pool, blobs: BlobStore, tenant: str, change: Change) -> dict[str, Any] | None:
    """The instance's DICOM JSON while the entry is current (a replaced or deleted one has none)."""
    if change.state != "current":
        return None
    found = await find_object_anywhere(pool, tenant, change.sop_uid)
    if found is None:
        return None
    base = instance_base(DICOMWEB_ROOT, change.study_uid, change.series_uid, change.sop_uid)

    def build() -> dict[str, Any]:
        with blobs.local_copy(found.blob_key) as path:
            return file_json(path, base)

    try:
        return await asyncio.to_thread(build)
    except BlobNotFound:
        return None


async def _entry(pool: Pool, blobs: BlobStore, tenant: str, change: Change, with_metadata: bool) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "Sequence": change.sequence,
        "StudyInstanceUid": change.study_uid,
        "SeriesInstanceUid": change.series_uid,
        "SopInstanceUid": change.sop_uid,
        "SopClassUid": change.sop_class_uid,
        "Action": change.action,
        "Timestamp": change.timestamp.isoformat(),
        "State": change.state,
    }
    if with_metadata:
        entry["Metadata"] = await _metadata(pool, blobs, tenant, change)
    return entry


@router.get("/dicomweb/changefeed", summary="Changes after a sequence number")
async def changefeed(
    pool: Pool,
    blobs: Blobs,
    tenant: Tenant,
    offset: Annotated[int, Query(ge=0)] = 0,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = DEFAULT_LIMIT,
    includemetadata: bool = True,
) -> JSONResponse:
    changes = await read_changes(pool, tenant, offset, limit)
    return JSONResponse([await _entry(pool, blobs, tenant, c, includemetadata) for c in changes])


@router.get("/dicomweb/changefeed/latest", summary="The latest change")
async def changefeed_latest(pool: Pool, blobs: Blobs, tenant: Tenant, includemetadata: bool = True) -> JSONResponse:
    change = await latest_change(pool, tenant)
    if change is None:
        return JSONResponse({"Sequence": 0})  # nothing has changed yet: read from offset 0
    return JSONResponse(await _entry(pool, blobs, tenant, change, includemetadata))
