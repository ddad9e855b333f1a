"""A caller (a token's subject, a calling AE, or anyone while auth is off) and what it may do."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from archive.identity.tenants import check_tenant


class Role(str, Enum):
    READER = "reader"  # QIDO, WADO, C-FIND, C-MOVE, C-GET
    WRITER = "writer"  # STOW, C-STORE, storage commitment
    DELETER = "deleter"  # DELETE
    UPDATER = "updater"  # a bulk update of patient and study attributes (with writer)
    ADMIN = "admin"  # its tenants' audit trail, health details; every role above, within its tenants
    # views across every tenant: the whole audit trail, metrics, the Temporal Web UI (which shows
    # every tenant's workflows). Separate from admin, so a hospital's admin token cannot read another's.
    OPERATOR = "operator"


class TenantRefused(PermissionError):
    """The caller named a tenant it may not use, or none when it has several."""

    def __init__(self, message: str, *, ambiguous: bool = False) -> None:
        super().__init__(message)
        self.ambiguous = ambiguous


@dataclass(frozen=True)
class Principal:
    subject: str
    tenants: frozenset[str]
    roles: frozenset[Role]
    method: str = "oidc"  # oidc | none | ae
    all_tenants: bool = False

    def has(self, role: Role) -> bool:
        if role in self.roles or Role.OPERATOR in self.roles:
            return True
        return Role.ADMIN in self.roles and role is not Role.OPERATOR

    def visible_tenants(self) -> frozenset[str] | None:
        """The tenants whose operational records (audit) this caller may read; None = every tenant."""
        return None if self.all_tenants or Role.OPERATOR in self.roles else self.tenants

    def may_use(self, tenant: str) -> bool:
        return self.all_tenants or tenant in self.tenants

    def choose_tenant(self, requested: str | None, default: str) -> str:
        """The tenant a request works in: the one it names, if allowed; else the caller's only one."""
        if requested:
            check_tenant(requested)
            if not self.may_use(requested):
                raise TenantRefused(f"{self.subject} may not use tenant {requested!r}")
            return requested
        if self.all_tenants or default in self.tenants:
            return default
        if len(self.tenants) == 1:
            return next(iter(self.tenants))
        if not self.tenants:
            raise TenantRefused(f"{self.subject} has no tenant: the token lists none")
        raise TenantRefused(
            f"{self.subject} may use several tenants: name one with the x-tenant header or the /tenants/{{tenant}}/dicomweb root",
            ambiguous=True,
        )


ANONYMOUS = Principal("anonymous", frozenset(), frozenset(Role), method="none", all_tenants=True)
