"""`dicomflow forward test RULE STUDY_UID [--tenant T]`: whether a stored study matches a forwarding
rule, and what a forward would send now, so an operator can try a rule before trusting it."""

from __future__ import annotations

import argparse
import asyncio

from archive.config.settings import Settings
from archive.index.pool import open_index_pool
from archive.routing.rules import ForwardRule, owed_instances, requester, study_matches


def add_parser(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    forward = sub.add_parser("forward", help="forwarding rules: try one against a stored study")
    verbs = forward.add_subparsers(dest="forward_command", required=True)
    test = verbs.add_parser("test", help="does a stored study match RULE, and what would a forward send now")
    test.add_argument("rule", help="the rule's name (forward_rules)")
    test.add_argument("study", help="a StudyInstanceUID")
    test.add_argument("--tenant", help="the study's tenant (default: the rule's, else default_tenant)")


async def _try(settings: Settings, rule: ForwardRule, tenant: str, study: str) -> tuple[bool, int]:
    pool = await open_index_pool(settings.effective_postgres_dsn(), max_size=1)
    try:
        if not await study_matches(pool, rule, tenant, study):
            return False, 0
        sql, params = owed_instances(tenant, study, requester(rule.name), rule.to.destination)
        async with pool.connection() as conn:
            row = await (await conn.execute(f"SELECT count(*) FROM ({sql}) AS m", params)).fetchone()
        return True, int(row[0]) if row else 0
    finally:
        await pool.close()


def cmd_forward(settings: Settings, args: argparse.Namespace) -> int:
    rules = {rule.name: rule for rule in settings.forward_rules}
    rule = rules.get(args.rule)
    if rule is None:
        known = ", ".join(sorted(rules)) or "none: add forward_rules to the settings"
        print(f"forward: no rule named {args.rule!r} (rules: {known})")
        return 2
    tenant = args.tenant or rule.tenant or settings.default_tenant
    if not rule.applies_to(tenant):
        print(f"forward: rule {rule.name!r} is for tenant {rule.tenant!r}, not {tenant!r}")
        return 1
    matches, owed = asyncio.run(_try(settings, rule, tenant, args.study))
    if not matches:
        print(
            f"forward: study {args.study} in tenant {tenant!r} does not match rule {rule.name!r} (match: {rule.match or 'everything'})"
        )
        return 1
    print(
        f"forward: study {args.study} in tenant {tenant!r} matches rule {rule.name!r}; "
        f"{owed} instance(s) not yet acknowledged by {rule.to.destination} would be sent"
    )
    return 0
