"""Whether a rule may join the rules in force: what a rule cannot say about itself (its model
checks that) but the archive around it can: a destination the AE table can reach and that does not
belong to another tenant; a tenant to copy into that the archive knows (one its index has a record
of, or one its settings name). The settings file's rules and those added at run time pass
the same checks."""

from __future__ import annotations

from collections.abc import Collection, Mapping

from archive.config.peers import AEEntry
from archive.config.sections import DimseSettings, RoutingSettings
from archive.routing.rules import ForwardRule


def destination_refusal(rule: ForwardRule, ae_table: Mapping[str, AEEntry]) -> str | None:
    if rule.to.ae is None:
        return None
    entry = ae_table.get(rule.to.ae)
    if entry is None or not entry.reachable:
        return f"forward rule {rule.name!r} sends to {rule.to.ae!r}, which has no host and port in ae_table"
    if rule.tenant is not None and entry.tenant not in (None, rule.tenant):
        return f"forward rule {rule.name!r} of tenant {rule.tenant!r} sends to {rule.to.ae!r}, which belongs to tenant {entry.tenant!r}"
    return None


def named_tenants(default_tenant: str, dimse: DimseSettings, routing: RoutingSettings) -> set[str]:
    """The tenants the settings name: the default, the AE table's, the forwarding rules' own."""
    named = {default_tenant, *(entry.tenant for entry in dimse.ae_table.values() if entry.tenant)}
    return named | {rule.tenant for rule in routing.forward_rules if rule.tenant}


def target_refusal(rule: ForwardRule, known_tenants: Collection[str]) -> str | None:
    """A copy into a tenant the archive has never heard of is a typo more often than a plan."""
    target = rule.to.tenant
    if target is None or target in known_tenants:
        return None
    return f"forward rule {rule.name!r} copies into tenant {target!r}, which this archive does not know (known: {', '.join(sorted(known_tenants))})"


def refusal(rule: ForwardRule, ae_table: Mapping[str, AEEntry], known_tenants: Collection[str]) -> str | None:
    """Why `rule` cannot send where it says (its name is the index's to check); None when it can."""
    return destination_refusal(rule, ae_table) or target_refusal(rule, known_tenants)
