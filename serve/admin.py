"""Admin routes: the audit trail (who touched which patient data, when, from where)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request

from archive.audit import AuditAction, AuditQuery, as_json, search_audit
from archive.identity import Role
from serve.deps import Pool, access, audit_note

router = APIRouter(tags=["Admin"], dependencies=[Depends(access(Role.ADMIN, AuditAction.AUDIT_READ))])


@router.get("/admin/audit", summary="Audit events, newest first (admin role)")
async def audit_events(
    request: Request,
    pool: Pool,
    since: datetime | None = None,
    until: datetime | None = None,
    tenant: str | None = None,
    subject: str | None = None,
    study: str | None = None,
    limit: Annotated[int, Query(ge=1, le=5000)] = 100,
) -> list[dict[str, Any]]:
    query = AuditQuery(since, until, tenant, subject, study, limit)
    audit_note(request)["query"] = {k: str(v) for k, v in vars(query).items() if v is not None}
    return [as_json(row) for row in await search_audit(pool, query)]
