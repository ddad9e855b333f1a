"""/admin/rejected: the instances IOCM rejection notes withdrew (archive/index/rejections.py), for
an administrator's tenants, with when each stops being restorable; POST /admin/rejected/restore
revokes a rejection within that grace. A restored instance goes through its study's workflow
again, which re-counts the study and rewrites its documents."""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from pydantic import BaseModel, Field

from archive.audit import AuditAction
from archive.dicom.rejection_note import REJECTION_CODES, RETENTION_EXPIRED
from archive.identity import Role
from archive.identity.tenants import BadTenant, check_tenant
from archive.index.instances import mark_signalled
from archive.index.rejections import Rejected, list_rejected, restore
from contract.starts import signal_study
from serve.deps import Caller, IngestDep, Pool, SettingsDep, access, audit_note
from serve.lookup import check_uids

log = logging.getLogger("dicomflow.rejected")
router = APIRouter(tags=["Admin"], dependencies=[Depends(access(Role.ADMIN, AuditAction.AUDIT_READ))])
restores = APIRouter(tags=["Admin"], dependencies=[Depends(access(Role.ADMIN, AuditAction.REJECT))])


class RestoreRequest(BaseModel):
    model_config = {"extra": "forbid"}

    tenant: str
    study: str  # a StudyInstanceUID
    instances: list[str] | None = Field(None, max_length=50_000)  # SOP Instance UIDs; none: every rejected one of the study


def _shown(tenant: str, r: Rejected, retention_days: float) -> dict[str, Any]:
    until = r.rejected_at if r.code == RETENTION_EXPIRED else r.rejected_at + timedelta(days=retention_days)
    return {
        "tenant": tenant,
        "StudyInstanceUID": r.study_uid,
        "SeriesInstanceUID": r.series_uid,
        "SOPInstanceUID": r.sop_uid,
        "code": r.code,
        "meaning": REJECTION_CODES.get(r.code, ""),
        "rejection_note": r.note_uid,
        "rejected_at": r.rejected_at.isoformat(),
        "restorable_until": None if r.deleted_at else until.isoformat(),
        "deleted_at": r.deleted_at.isoformat() if r.deleted_at else None,
    }


@router.get("/admin/rejected", summary="Instances withdrawn by IOCM rejection notes (admin role: own tenants)")
async def rejected(
    pool: Pool,
    settings: SettingsDep,
    caller: Caller,
    study: str | None = None,
    limit: int = Query(1000, ge=1, le=10_000),
) -> list[dict[str, Any]]:
    if study is not None:
        check_uids(study=study)
    visible = caller.visible_tenants()
    rows = await list_rejected(pool, sorted(visible) if visible is not None else None, study, limit)
    return [_shown(tenant, r, settings.lifecycle.rejected_retention_days) for tenant, r in rows]


@restores.post("/admin/rejected/restore", summary="Revoke rejections within their grace period (admin role: own tenants)")
async def restore_rejected(body: RestoreRequest, request: Request, caller: Caller, ingest: IngestDep) -> dict[str, Any]:
    try:
        check_tenant(body.tenant)
    except BadTenant as err:
        raise HTTPException(400, str(err)) from None
    check_uids(study=body.study)
    visible = caller.visible_tenants()
    if visible is not None and body.tenant not in visible:
        raise HTTPException(403, f"{caller.subject} may restore instances of its own tenants only")
    audit_note(request)["tenant"] = body.tenant
    restored = await restore(ingest.pool, body.tenant, body.study, body.instances)
    audit_note(request)["detail"] = {"study": body.study, "restored": len(restored), "sop_uids": restored[:100]}
    if not restored:
        raise HTTPException(
            404, "nothing to restore: no rejected instance of this study is held (restored, expired or never rejected)"
        )
    await _reprocess(ingest, body.tenant, body.study, restored)
    return {"tenant": body.tenant, "StudyInstanceUID": body.study, "restored": restored}


async def _reprocess(ingest: IngestDep, tenant: str, study: str, sop_uids: list[str]) -> None:
    settings = ingest.settings
    try:
        client = await ingest.temporal_client()
        await signal_study(
            client,
            settings.temporal.task_queue,
            tenant,
            study,
            len(sop_uids),
            None,
            settings.ingest.stable_seconds,
            settled=True,  # the request restored all it will
        )
        await mark_signalled(ingest.pool, tenant, sop_uids)
    except Exception:  # noqa: BLE001 - the rows say 'not signalled': the reconciler tells the workflow later
        log.warning("restore in %s not signalled yet; the reconciler will", study, exc_info=True)
