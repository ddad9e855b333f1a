"""What this DICOMweb server supports, for people and for clients that ask."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends

from archive.pixels.frames import FRAME_MEDIA_TYPES
from archive.query.attributes import ATTRIBUTES, WORKITEM_BY_KEYWORD
from archive.query.qido import DEFAULT_LIMIT, MAX_LIMIT
from serve.deps import SettingsDep, authenticate
from serve.version import dicomflow_version

# (service, SOP classes, the AE table `services` entry that allows it)
DIMSE_SERVICES = [
    ("C-ECHO", ["1.2.840.10008.1.1"], "any known AE"),
    ("C-STORE", ["all storage SOP classes"], "store"),
    ("Storage Commitment", ["1.2.840.10008.1.20.1"], "commit"),
    ("C-FIND", ["1.2.840.10008.5.1.4.1.2.1.1", "1.2.840.10008.5.1.4.1.2.2.1"], "find"),
    ("C-MOVE", ["1.2.840.10008.5.1.4.1.2.1.2", "1.2.840.10008.5.1.4.1.2.2.2"], "move"),
    ("C-GET", ["1.2.840.10008.5.1.4.1.2.1.3", "1.2.840.10008.5.1.4.1.2.2.3"], "get"),
    ("Modality Worklist", ["1.2.840.10008.5.1.4.31"], "worklist"),
    ("MPPS", ["1.2.840.10008.3.1.2.3.3"], "mpps"),
]

router = APIRouter(tags=["Capabilities"], dependencies=[Depends(authenticate)])


@router.get("/dicomweb/capabilities", summary="Supported services, media types and query attributes")
async def capabilities(settings: SettingsDep) -> dict[str, Any]:
    return {
        "server": dicomflow_version(),
        "authentication": (
            "none: every caller is trusted (loopback only)"
            if settings.auth == "none"
            else "OIDC bearer token (Authorization: Bearer ...); roles reader, writer, deleter, admin"
        ),
        "tenancy": "the /tenants/{tenant}/dicomweb root or the x-tenant header, if the caller may use that tenant; "
        "else the caller's only tenant",
        "STOW-RS": {
            "paths": ["/dicomweb/studies", "/dicomweb/studies/{study}", "/stow-rs/v1/studies"],
            "accepts": 'multipart/related; type="application/dicom"',
            "responses": {
                "200": "all stored",
                "202": "some failed",
                "409": "none stored",
                "503": "none stored: index or blob store unreachable (A700); Retry-After",
                "400": "malformed body",
                "413": "too large",
                "415": "wrong media type",
            },
        },
        "QIDO-RS": {
            "levels": ["studies", "series", "instances"],
            "limit": {"default": DEFAULT_LIMIT, "maximum": MAX_LIMIT},
            "matching": [
                "single value",
                "wildcard * ?",
                "UID list (comma or backslash)",
                "date/time ranges",
                "case-insensitive PN",
                "fuzzymatching",
            ],
            "attributes": {a.keyword: {"tag": a.tag, "level": a.level} for a in ATTRIBUTES},
            "includefield": "keywords, tags or 'all'",
            "no match": "200 with []",
        },
        "WADO-RS": {
            "retrieve": 'multipart/related; type="application/dicom"; transfer-syntax=* (as stored) or '
            "1.2.840.10008.1.2.1 (decompressed)",
            "metadata": "application/dicom+json, gzip, ETag / If-None-Match",
            "frames": [
                "application/octet-stream (decoded, or transfer-syntax=* as stored)",
                *sorted(set(FRAME_MEDIA_TYPES.values())),
            ],
            "rendered": ["image/jpeg", "image/png"],
            "rendered parameters": ["window", "viewport", "quality"],
            "thumbnail": "study, series, instance",
            "bulkdata": "multipart or application/octet-stream with Range",
            "decoding": {
                "413": "too large to decode (decode_memory_bytes)",
                "422": "the pixel stream cannot be decoded",
                "503": "decoding timed out or every decode worker is busy (Retry-After)",
            },
        },
        "WADO-URI": {"path": "/dicomweb/wado", "contentType": ["application/dicom", "image/jpeg", "image/png"]},
        "UPS-RS": {
            "paths": [
                "POST /dicomweb/workitems?workitem={uid}",
                "GET /dicomweb/workitems/{uid}",
                "GET /dicomweb/workitems?{keys}",
                "PUT /dicomweb/workitems/{uid}/state",
            ],
            "search keys": sorted(WORKITEM_BY_KEYWORD),
            "worklist": "a workitem with ReferencedRequestSequence/AccessionNumber is also a Modality Worklist item",
        },
        "DIMSE": {
            "ae_title": settings.dimse.ae_title,
            "port": settings.dimse.port,
            "tls_port": settings.dimse.tls_port if settings.tls.enabled else None,
            "services": {name: {"sop_classes": sorted(uids), "needs": need} for name, uids, need in DIMSE_SERVICES},
            "query levels": ["PATIENT", "STUDY", "SERIES", "IMAGE"],
            "retrieve": "C-MOVE to AE-table destinations through a Temporal workflow; C-GET on the same association; "
            "decompressed when the receiver accepts none of the stored transfer syntax",
        },
        "DELETE": [
            "/dicomweb/studies/{study}",
            "/dicomweb/studies/{study}/series/{series}",
            "/dicomweb/studies/{study}/series/{series}/instances/{instance}",
        ],
    }
