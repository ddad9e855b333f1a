"""Whether a rule may join the rules in force: what a rule cannot say about itself (its model
checks that) but the archive around it can: a destination the AE table can reach and that does not
belong to another tenant. The settings file's rules and those added at run time pass
the same checks."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

from archive.routing.rules import ForwardRule


class _Reachable(Protocol):  # archive.config.settings.AEEntry, without importing the settings here
    tenant: str | None

    @property
    def reachable(self) -> bool: ...


def destination_refusal(rule: ForwardRule, ae_table: Mapping[str, _Reachable]) -> str | None:
    if rule.to.ae is None:
        return None
    entry = ae_table.get(rule.to.ae)
    if entry is None or not entry.reachable:
        return f"forward rule {rule.name!r} sends to {rule.to.ae!r}, which has no host and port in ae_table"
    if rule.tenant is not None and entry.tenant not in (None, rule.tenant):
        return f"forward rule {rule.name!r} of tenant {rule.tenant!r} sends to {rule.to.ae!r}, which belongs to tenant {entry.tenant!r}"
    return None


def refusal(rule: ForwardRule, ae_table: Mapping[str, _Reachable]) -> str | None:
    """Why `rule` cannot send where it says (its name is the index's to check); None when it can."""
    return destination_refusal(rule, ae_table)
