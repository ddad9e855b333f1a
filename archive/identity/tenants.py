"""Tenant names: they appear in paths, keys and workflow ids, so they are kept to a safe alphabet."""

from __future__ import annotations

import re

_TENANT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")


class BadTenant(ValueError):
    pass


def check_tenant(name: str) -> str:
    if not _TENANT.match(name or ""):
        raise BadTenant(f"tenant {name!r} is not allowed: use 1-64 letters, digits, '-' or '_'")
    return name
