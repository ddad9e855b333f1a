"""Who may open an association: the AE table's entry for the calling AE title, the host it calls
from, the services it may use, and the tenant its objects belong to."""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import re
from dataclasses import dataclass, field

from archive.config.peers import MODALITY_SERVICES, AEEntry
from archive.config.settings import Settings
from archive.identity.principal import ANONYMOUS, Principal, Role, TenantRefused

# the Role a DIMSE service needs when the caller presented a token (user identity negotiation)
SERVICE_ROLE = {
    "store": Role.WRITER,
    "commit": Role.WRITER,
    "find": Role.READER,
    "move": Role.READER,
    "get": Role.READER,
    "worklist": Role.READER,
    "mpps": Role.WRITER,
}


@dataclass(frozen=True)
class Refusal:
    reason: str
    diagnostic: int  # A-ASSOCIATE-RJ service-user reason: 3 calling AE, 7 called AE not recognized


@dataclass(frozen=True)
class PeerCertificate:
    """The client certificate a DICOM TLS peer presented (already verified against the CA)."""

    common_name: str | None
    sha256: str  # lower-case hex of the DER bytes

    @classmethod
    def from_der(cls, der: bytes, common_name: str | None) -> PeerCertificate:
        return cls(common_name, hashlib.sha256(der).hexdigest())

    def describe(self) -> str:
        return f"CN={self.common_name!r}, SHA-256 {self.sha256}"


def certificate_matches(expected: str, cert: PeerCertificate | None) -> bool:
    """`expected` (the AE table's tls_certificate) names `cert` by SHA-256 fingerprint (64 hex
    digits, colons and a 'sha256:' prefix allowed) or else by its subject common name."""
    if cert is None:
        return False
    digits = expected.strip().lower().removeprefix("sha256:").replace(":", "")
    if re.fullmatch(r"[0-9a-f]{64}", digits):
        return hmac.compare_digest(digits, cert.sha256)
    return cert.common_name == expected.strip()


@dataclass
class Caller:
    """One association's caller, decided at A-ASSOCIATE and consulted by every service on it."""

    calling_ae: str
    peer: str
    entry: AEEntry | None
    services: frozenset[str]
    principal: Principal = field(default=ANONYMOUS)

    def may(self, service: str) -> bool:
        if service not in self.services:
            return False
        role = SERVICE_ROLE.get(service)
        return role is None or self.principal.method != "oidc" or self.principal.has(role)

    def subject(self) -> str:
        return self.principal.subject if self.principal.method == "oidc" else f"ae:{self.calling_ae}"


def _host_allowed(entry: AEEntry, peer: str) -> bool:
    if entry.allowed_hosts is None:
        return True
    try:
        address = ipaddress.ip_address(peer)
    except ValueError:
        return False
    return any(address in ipaddress.ip_network(net, strict=False) for net in entry.allowed_hosts)


def admit(
    settings: Settings, calling_ae: str, peer: str, *, verification_only: bool = False, certificate: PeerCertificate | None = None
) -> Caller | Refusal:
    """The caller of a new association, or why it is refused (A-ASSOCIATE-RJ). An association
    that proposes nothing but Verification (C-ECHO: monitoring, connection tests) reveals no data
    and is answered for anyone. An unknown AE admitted by dimse_accept_unknown_ae may only do what
    a modality does (store, commit): anyone can claim any title, so it never queries or retrieves.
    `certificate`: the DICOM TLS client certificate, which an entry naming one must present."""
    calling = calling_ae.strip()
    entry = settings.dimse.ae_table.get(calling)
    if entry is None:
        if settings.accepts_unknown_ae:
            return Caller(calling, peer, None, frozenset(MODALITY_SERVICES))
        if verification_only:
            return Caller(calling, peer, None, frozenset())
        return Refusal(f"calling AE title {calling!r} is not in the AE table", 3)
    if not _host_allowed(entry, peer):
        return Refusal(f"calling AE title {calling!r} may not call from {peer}", 3)
    if entry.tls_certificate is not None and not certificate_matches(entry.tls_certificate, certificate):
        shown = certificate.describe() if certificate else "no certificate (plain TCP or none presented)"
        return Refusal(f"calling AE title {calling!r} must present the certificate {entry.tls_certificate!r}, not {shown}", 3)
    return Caller(calling, peer, entry, frozenset(entry.services))


def tenant_of(settings: Settings, caller: Caller, called_ae: str) -> str:
    """The tenant an association works in. A known AE is bound to its entry's tenant; a token may
    choose among its tenants through the called AE title; an unknown AE (allowed only when the
    settings say so) gets the called AE title's tenant or the default."""
    mapped = settings.dimse.ae_table.get(called_ae.strip())
    requested = mapped.tenant if mapped and mapped.tenant else None
    if caller.principal.method == "oidc":
        bound = caller.entry.tenant if caller.entry else None
        return caller.principal.choose_tenant(requested or bound, settings.default_tenant)
    if caller.entry is None:
        return settings.tenant_for_ae(caller.calling_ae, called_ae)
    own = caller.entry.tenant or settings.default_tenant
    if requested and requested != own:
        raise TenantRefused(f"{caller.calling_ae} belongs to tenant {own!r}, not {requested!r} (called AE {called_ae.strip()!r})")
    return own
