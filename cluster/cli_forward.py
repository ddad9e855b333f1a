"""`dicomflow forward test RULE STUDY_UID [--tenant T]`: whether a stored study matches a forwarding
rule (of the settings file or added at run time), and what a forward would send now, so an
operator can try a rule before trusting it. `dicomflow forward cancel RULE STUDY_UID [--tenant T]`:
stop that study's forward by the rule (a Temporal cancellation the workflow handles and audits)."""

from __future__ import annotations

import argparse
import asyncio

from psycopg_pool import AsyncConnectionPool
from temporalio.client import Client

from archive.config.settings import Settings
from archive.index.pool import open_index_pool
from archive.routing.registry import rules_in_force
from archive.routing.rules import ForwardRule, owed_instances, requester, study_matches
from contract.cancels import ForwardNotRunning, cancel_forward


def add_parser(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    forward = sub.add_parser("forward", help="forwarding rules: try one against a stored study")
    verbs = forward.add_subparsers(dest="forward_command", required=True)
    test = verbs.add_parser("test", help="does a stored study match RULE, and what would a forward send now")
    test.add_argument("rule", help="the rule's name (forward_rules, or added through /admin/forwarding)")
    test.add_argument("study", help="a StudyInstanceUID")
    test.add_argument("--tenant", help="the study's tenant (default: the rule's, else default_tenant)")
    cancel = verbs.add_parser("cancel", help="cancel the forward of a study by RULE (forward:{tenant}:{rule}:{study})")
    cancel.add_argument("rule", help="the rule's name")
    cancel.add_argument("study", help="a StudyInstanceUID")
    cancel.add_argument("--tenant", help="the study's tenant (default: the rule's, else default_tenant)")


async def _owed(pool: AsyncConnectionPool, rule: ForwardRule, tenant: str, study: str) -> int | None:
    """How many instances a forward would send now; None when the study does not match."""
    if not await study_matches(pool, rule, tenant, study):
        return None
    sql, params = owed_instances(tenant, study, requester(rule.name), rule.to.destination)
    async with pool.connection() as conn:
        row = await (await conn.execute(f"SELECT count(*) FROM ({sql}) AS m", params)).fetchone()
    return int(row[0]) if row else 0


async def _test(settings: Settings, args: argparse.Namespace) -> int:
    pool = await open_index_pool(settings.effective_postgres_dsn(), max_size=1)
    try:
        rules = {rule.name: rule for rule in await rules_in_force(settings.routing, pool)}
        rule = rules.get(args.rule)
        if rule is None:
            known = ", ".join(sorted(rules)) or "none: add forward_rules to the settings or through /admin/forwarding"
            print(f"forward: no rule named {args.rule!r} (rules: {known})")
            return 2
        tenant = args.tenant or rule.tenant or settings.default_tenant
        if not rule.applies_to(tenant):
            print(f"forward: rule {rule.name!r} is for tenant {rule.tenant!r}, not {tenant!r}")
            return 1
        owed = await _owed(pool, rule, tenant, args.study)
    finally:
        await pool.close()
    if owed is None:
        print(
            f"forward: study {args.study} in tenant {tenant!r} does not match rule {rule.name!r} (match: {rule.match or 'everything'})"
        )
        return 1
    print(
        f"forward: study {args.study} in tenant {tenant!r} matches rule {rule.name!r}; "
        f"{owed} instance(s) not yet acknowledged by {rule.to.destination} would be sent"
    )
    return 0


async def _cancel(settings: Settings, args: argparse.Namespace) -> int:
    pool = await open_index_pool(settings.effective_postgres_dsn(), max_size=1)
    try:  # the rule may have been removed since its forward started: then --tenant or the default
        rule = next((r for r in await rules_in_force(settings.routing, pool) if r.name == args.rule), None)
    finally:
        await pool.close()
    tenant = args.tenant or (rule.tenant if rule else None) or settings.default_tenant
    client = await Client.connect(settings.effective_temporal_address(), namespace=settings.temporal.namespace)
    try:
        workflow_id = await cancel_forward(client, tenant, args.rule, args.study)
    except ForwardNotRunning as err:
        print(f"forward: {err}")
        return 1
    print(f"forward: cancel requested for {workflow_id}; it withdraws its round and ends cancelled")
    return 0


def cmd_forward(settings: Settings, args: argparse.Namespace) -> int:
    return asyncio.run(_cancel(settings, args) if args.forward_command == "cancel" else _test(settings, args))
