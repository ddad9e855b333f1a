"""/admin/forwarding: the forwarding rules an administrator's tenants have (the settings file's and
those added at run time), each destination's queue and the instances forwards could not deliver
lately (with the status the destination gave); POST adds a rule, DELETE /admin/forwarding/{name}
removes one added at run time, and DELETE /admin/forwarding/workflows/{tenant}/{rule}/{study}
cancels a forward. A tenant's administrator manages its own tenants' rules and forwards only; a
rule for every tenant is the operator's."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, HTTPException, Request, Response
from pydantic import ValidationError

from archive.audit import AuditAction
from archive.identity import Principal, Role
from archive.identity.tenants import BadTenant, check_tenant
from archive.index import forward_rules
from archive.index.backlog import forward_failures, forward_queues
from archive.index.tenants import tenant_names
from archive.routing.admission import named_tenants, refusal
from archive.routing.registry import rules_in_force
from archive.routing.rules import ForwardRule
from contract.cancels import ForwardNotRunning, cancel_forward
from serve.deps import Caller, IngestDep, Pool, SettingsDep, access, audit_note

router = APIRouter(tags=["Admin"], dependencies=[Depends(access(Role.ADMIN, AuditAction.AUDIT_READ))])
# a change of the rules is a PS3.15 Security Alert of type Software Configuration
changes = APIRouter(tags=["Admin"], dependencies=[Depends(access(Role.ADMIN, AuditAction.SECURITY_ALERT))])


def _manages(caller: Principal, rule: ForwardRule) -> bool:
    visible = caller.visible_tenants()
    return visible is None or (rule.tenant is not None and rule.tenant in visible)


def _may_copy_into(caller: Principal, rule: ForwardRule) -> bool:
    """A copy writes into its target tenant: that tenant's administrator (or the operator) decides."""
    visible = caller.visible_tenants()
    return rule.to.tenant is None or visible is None or rule.to.tenant in visible


@router.get("/admin/forwarding", summary="Forwarding rules, destination queues and recent failures (admin role)")
async def forwarding(pool: Pool, settings: SettingsDep, caller: Caller) -> dict[str, Any]:
    visible = caller.visible_tenants()
    seeded = {rule.name for rule in settings.routing.forward_rules}
    mine = [rule for rule in await rules_in_force(settings.routing, pool) if _manages(caller, rule)]
    rules = [
        {**rule.model_dump(mode="json", exclude_none=True), "source": "settings" if rule.name in seeded else "runtime"}
        for rule in mine
    ]
    destinations = {rule.to.destination for rule in mine}
    async with pool.connection() as conn:
        queues = await forward_queues(conn)
        failures = await forward_failures(conn, visible)
    return {
        "rules": rules,
        "destinations": {name: queue for name, queue in queues.items() if visible is None or name in destinations},
        "failures": failures,
    }


def _note_change(request: Request, tenant: str | None, **change: str) -> None:
    """The audit event of this request (PS3.15 Security Alert): a Software Configuration change, under the rule's tenant."""
    audit_note(request)["detail"] = {"event_type": "Software Configuration", **change}
    if tenant is not None:
        audit_note(request)["tenant"] = tenant


def _parsed(body: Any) -> ForwardRule:
    try:
        return ForwardRule.model_validate(body)
    except ValidationError as err:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'rule'}: {e['msg']}" for e in err.errors())
        raise HTTPException(422, f"not a forwarding rule: {problems}") from None


@changes.post("/admin/forwarding", status_code=201, summary="Add a forwarding rule (admin role: own tenants' rules)")
async def add_rule(
    body: Annotated[dict[str, Any], Body()], request: Request, pool: Pool, settings: SettingsDep, caller: Caller
) -> dict[str, Any]:
    rule = _parsed(body)
    _note_change(request, rule.tenant, forward_rule_added=rule.name)
    if not _manages(caller, rule) or not _may_copy_into(caller, rule):
        raise HTTPException(
            403,
            f"{caller.subject} may add rules of its own tenants only, copying into its own tenants only "
            "(a rule for every tenant: operator role)",
        )
    if any(other.name == rule.name for other in await rules_in_force(settings.routing, pool)):
        raise HTTPException(409, f"a forward rule named {rule.name!r} exists already")
    data = rule.model_dump(mode="json", exclude_none=True)
    async with pool.connection() as conn:
        refused = refusal(
            rule,
            settings.dimse.ae_table,
            named_tenants(settings.default_tenant, settings.dimse, settings.routing) | await tenant_names(conn),
        )
        if refused:
            raise HTTPException(422, refused)
        if not await forward_rules.add_rule(conn, rule.name, rule.tenant, data, caller.subject):
            raise HTTPException(409, f"a forward rule named {rule.name!r} exists already")
    return {**data, "source": "runtime"}


@changes.delete("/admin/forwarding/{name}", status_code=204, summary="Remove a forwarding rule added at run time (admin role)")
async def remove_rule(name: str, request: Request, pool: Pool, settings: SettingsDep, caller: Caller) -> Response:
    rule = next((r for r in await rules_in_force(settings.routing, pool) if r.name == name), None)
    if rule is None:
        raise HTTPException(404, f"no forward rule named {name!r}")
    _note_change(request, rule.tenant, forward_rule_removed=name)
    if not _manages(caller, rule):
        raise HTTPException(403, f"{caller.subject} may remove rules of its own tenants only")
    if any(r.name == name for r in settings.routing.forward_rules):
        raise HTTPException(409, f"forward rule {name!r} comes from the settings file: remove it there")
    async with pool.connection() as conn:
        await forward_rules.remove_rule(conn, name)
    return Response(status_code=204)


@changes.delete(
    "/admin/forwarding/workflows/{tenant}/{rule}/{study}",
    status_code=202,
    summary="Cancel the forward forward:{tenant}:{rule}:{study} (admin role: own tenants)",
)
async def cancel(tenant: str, rule: str, study: str, request: Request, caller: Caller, ingest: IngestDep) -> dict[str, str]:
    try:
        check_tenant(tenant)
    except BadTenant as err:
        raise HTTPException(400, str(err)) from None
    visible = caller.visible_tenants()
    if visible is not None and tenant not in visible:
        raise HTTPException(403, f"{caller.subject} may cancel forwards of its own tenants only")
    _note_change(request, tenant, forward_cancelled=rule)
    try:
        client = await ingest.temporal_client()
        workflow_id = await cancel_forward(client, tenant, rule, study)
    except ForwardNotRunning as err:
        raise HTTPException(409 if err.status else 404, str(err)) from None
    except ConnectionError as err:
        raise HTTPException(503, str(err), headers={"Retry-After": "5"}) from None
    return {"workflow_id": workflow_id, "state": "cancel requested"}
