"""Tokens for the test suite: one real OIDC issuer on loopback for the whole session, whose keys
the archive fetches (and caches in Redis) exactly as it would a hospital's IdP."""

from __future__ import annotations

import functools
from collections.abc import Iterable

from testkit.oidc_issuer import OidcIssuer

AUDIENCE = "dicomflow"
ALL_ROLES = ("reader", "writer", "deleter")


@functools.cache
def issuer() -> OidcIssuer:
    return OidcIssuer().start()


def token(tenants: Iterable[str], roles: Iterable[str] = ALL_ROLES, subject: str = "tester") -> str:
    return issuer().token(subject, tenants=tuple(tenants), roles=tuple(roles), audience=AUDIENCE, expires_in=4 * 3600)


@functools.cache
def _cached(tenant: str, roles: tuple[str, ...]) -> str:
    return token([tenant], roles)


def auth_headers(tenant: str, roles: Iterable[str] = ALL_ROLES, **extra: str) -> dict[str, str]:
    """What a client of one tenant sends: its bearer token and the tenant it works in."""
    return {"Authorization": f"Bearer {_cached(tenant, tuple(roles))}", "x-tenant": tenant, **extra}


def bearer(tenant: str, roles: Iterable[str] = ALL_ROLES) -> dict[str, str]:
    """Only the token, as OHIF sends it (its tenant comes from the token or the URL root)."""
    return {"Authorization": f"Bearer {_cached(tenant, tuple(roles))}"}


def admin_headers(tenants: Iterable[str] = ("default",)) -> dict[str, str]:
    """A tenant's administrator: its own tenants' audit trail and health details."""
    return {"Authorization": f"Bearer {token(list(tenants), ['admin'], subject='admin')}"}


def operator_headers() -> dict[str, str]:
    """The archive's operator: views across every tenant (audit, metrics, the Temporal Web UI)."""
    return {"Authorization": f"Bearer {token([], ['operator'], subject='operator')}"}


def stack_auth_settings() -> dict[str, object]:
    return {"auth": "oidc", "oidc_issuer": [issuer().issuer], "oidc_audience": AUDIENCE}
