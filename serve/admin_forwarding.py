"""GET /admin/forwarding: the forwarding rules an administrator's tenants have, each destination's
queue, and the instances forwards could not deliver lately (with the status the destination gave)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends

from archive.audit import AuditAction
from archive.identity import Role
from archive.index.backlog import forward_failures, forward_queues
from serve.deps import Caller, Pool, SettingsDep, access

router = APIRouter(tags=["Admin"], dependencies=[Depends(access(Role.ADMIN, AuditAction.AUDIT_READ))])


@router.get("/admin/forwarding", summary="Forwarding rules, destination queues and recent failures (admin role)")
async def forwarding(pool: Pool, settings: SettingsDep, caller: Caller) -> dict[str, Any]:
    visible = caller.visible_tenants()
    rules = [
        rule.model_dump(mode="json", exclude_none=True)
        for rule in settings.forward_rules
        if visible is None or (rule.tenant is not None and rule.tenant in visible)
    ]
    destinations = {rule["to"].get("ae") or f"stow:{rule['to'].get('stow')}" for rule in rules}
    async with pool.connection() as conn:
        queues = await forward_queues(conn)
        failures = await forward_failures(conn, visible)
    return {
        "rules": rules,
        "destinations": {name: queue for name, queue in queues.items() if visible is None or name in destinations},
        "failures": failures,
    }
