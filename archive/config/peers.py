"""Who the archive talks to: remote application entities (the AE table) and HL7 v2 senders, each
with where it may call from and what it may do."""

from __future__ import annotations

import ipaddress
from typing import Literal

from pydantic import BaseModel, Field, field_validator

DimseService = Literal["store", "commit", "find", "move", "get", "worklist", "mpps"]
ALL_DIMSE_SERVICES: tuple[DimseService, ...] = ("store", "commit", "find", "move", "get", "worklist", "mpps")
MODALITY_SERVICES: tuple[DimseService, ...] = ("store", "commit")


class AEEntry(BaseModel):
    """A remote application entity: where to reach it, which tenant its objects belong to, and
    what it may do when it calls us."""

    model_config = {"extra": "forbid"}

    host: str | None = None  # where N-EVENT-REPORTs (and later C-MOVE results) go
    port: int | None = Field(None, ge=1, le=65535)
    tenant: str | None = None
    # addresses (IP or CIDR) it may call from; None = any address
    allowed_hosts: list[str] | None = None
    # the DIMSE services it may use (C-ECHO is always answered); a modality stores and asks for commitment
    services: list[DimseService] = Field(default_factory=lambda: list(MODALITY_SERVICES))
    # when it calls on the DICOM TLS port: the client certificate it must present, by subject CN or
    # SHA-256 fingerprint (hex, colons allowed); another certificate, or none, is refused
    tls_certificate: str | None = Field(None, min_length=1)
    # associations we open to it (C-MOVE destination, N-EVENT-REPORT) use DICOM TLS (needs tls_ca_file)
    tls: bool = False

    @field_validator("allowed_hosts")
    @classmethod
    def _networks(cls, value: list[str] | None) -> list[str] | None:
        for entry in value or []:
            ipaddress.ip_network(entry, strict=False)  # ValueError names the bad entry
        return value

    @property
    def reachable(self) -> bool:
        return bool(self.host and self.port)


class HL7Sender(BaseModel):
    """A system that sends HL7 v2 ADT messages (a patient administration system, an interface
    engine), known by its sending facility (MSH-4): its messages apply to one tenant, and it may
    connect only from these addresses (IP or CIDR)."""

    model_config = {"extra": "forbid"}

    tenant: str
    allowed_hosts: list[str] = Field(min_length=1)

    @field_validator("allowed_hosts")
    @classmethod
    def _networks(cls, value: list[str]) -> list[str]:
        for entry in value:
            ipaddress.ip_network(entry, strict=False)
        return value

    def allows(self, address: str) -> bool:
        try:
            peer = ipaddress.ip_address(address.removeprefix("::ffff:"))
        except ValueError:
            return False
        return any(peer in ipaddress.ip_network(net, strict=False) for net in self.allowed_hosts)
