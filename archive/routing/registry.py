"""The forwarding rules in force: the settings file's (the seed) followed by those added at run
time through /admin/forwarding (rows in the index). Every reader of the rules (the study workflow's
routing step, the receiving side for when = "instance", the sending steps, `dicomflow forward test`
and the admin view) goes through `rules_in_force`, so all of them see one list."""

from __future__ import annotations

import logging
from typing import Any

from psycopg_pool import AsyncConnectionPool
from pydantic import ValidationError

from archive.config.sections import RoutingSettings
from archive.index.forward_rules import stored_rules
from archive.routing.rules import ForwardRule

log = logging.getLogger("dicomflow.routing")


async def rules_in_force(routing: RoutingSettings, pool: AsyncConnectionPool) -> list[ForwardRule]:
    async with pool.connection() as conn:
        rows = await stored_rules(conn)
    return merged(routing.forward_rules, rows)


async def rule_in_force(routing: RoutingSettings, pool: AsyncConnectionPool, name: str) -> ForwardRule | None:
    return next((rule for rule in await rules_in_force(routing, pool) if rule.name == name), None)


def merged(seed: list[ForwardRule], rows: list[tuple[str, dict[str, Any]]]) -> list[ForwardRule]:
    """The seed, then each stored rule that still reads as a rule and whose name the seed has not
    taken since it was added (the settings file wins: an operator's edit there is deliberate)."""
    taken = {rule.name for rule in seed}
    added = []
    for name, data in rows:
        if name in taken:
            log.warning("forward rule %r added at run time is shadowed by the settings file's rule of that name", name)
            continue
        try:
            added.append(ForwardRule.model_validate(data))
        except ValidationError as err:
            log.warning("forward rule %r in the index no longer reads as a rule; skipped: %s", name, err)
    return [*seed, *added]
