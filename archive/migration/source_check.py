"""Whether an AE-table entry can be migrated from, with what to change when it cannot: the source is
asked over DIMSE (so it needs an address), and it sends the studies back by C-STORE like any
modality (so the archive must accept its C-STOREs, from where it is)."""

from __future__ import annotations

import ipaddress

from archive.config.peers import AEEntry
from archive.config.sections import DimseSettings
from archive.config.settings import Settings


def source_refusal(dimse: DimseSettings, source_ae: str) -> str | None:
    """Why `source_ae` cannot be migrated from; None when it can."""
    entry = dimse.ae_table.get(source_ae)
    if entry is None:
        known = ", ".join(sorted(dimse.ae_table)) or "none"
        return (
            f"{source_ae!r} is not in the AE table (known: {known}); add it under [ae_table.{source_ae}] with "
            'host, port and services = ["store"] (and tenant, if its studies belong to one)'
        )
    if not entry.reachable:
        return f"ae_table.{source_ae} has no host and port: the archive must call it for C-FIND and C-MOVE"
    if "store" not in entry.services:
        return (
            f'ae_table.{source_ae}.services does not allow "store": the source sends the studies back by C-STORE, '
            "which the archive would refuse"
        )
    if not _may_call_from(entry):
        return f"ae_table.{source_ae}.allowed_hosts does not include its own host {entry.host}: its C-STOREs would be refused"
    return None


def _may_call_from(entry: AEEntry) -> bool:
    if entry.allowed_hosts is None:
        return True
    try:
        address = ipaddress.ip_address(str(entry.host))
    except ValueError:
        return True  # a host name: cannot tell here which address it calls from
    return any(address in ipaddress.ip_network(net, strict=False) for net in entry.allowed_hosts)


def migration_tenant(settings: Settings, source_ae: str) -> str:
    """The tenant the source's C-STOREs land in: the one the receipt path gives them (its entry's)."""
    return settings.tenant_for_ae(source_ae, settings.dimse.ae_title)
