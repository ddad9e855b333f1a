"""Admin routes: the audit trail (who touched which patient data, when, from where)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request

from archive.audit import AuditAction, AuditQuery, as_json, search_audit
from archive.identity import Role
from serve.deps import Caller, Pool, access, audit_note

router = APIRouter(tags=["Admin"], dependencies=[Depends(access(Role.ADMIN, AuditAction.AUDIT_READ))])


@router.get("/admin/audit", summary="Audit events of the caller's tenants, newest first (admin role; every tenant: operator)")
async def audit_events(
    request: Request,
    pool: Pool,
    caller: Caller,
    since: datetime | None = None,
    until: datetime | None = None,
    tenant: str | None = None,
    subject: str | None = None,
    study: str | None = None,
    limit: Annotated[int, Query(ge=1, le=5000)] = 100,
) -> list[dict[str, Any]]:
    within = caller.visible_tenants()
    if tenant is not None and within is not None and tenant not in within:
        raise HTTPException(
            403, f"{caller.subject} may read the audit trail of its own tenants only; another tenant's needs the 'operator' role"
        )
    query = AuditQuery(since, until, tenant, subject, study, limit, within)
    audit_note(request)["query"] = {k: str(v) for k, v in vars(query).items() if v is not None}
    return [as_json(row) for row in await search_audit(pool, query)]
