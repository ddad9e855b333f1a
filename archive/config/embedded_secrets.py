"""Passwords of the embedded PostgreSQL and Redis: generated on first start, kept under
var/secrets (directory 0700, files 0600, owned by whoever runs dicomflow), never on a command line."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

POSTGRES = "postgres_password"  # the owner role: runs migrations, owns every table
POSTGRES_APP = "postgres_app_password"  # the application role: no UPDATE/DELETE on the audit trail
REDIS = "redis_password"
OIDC_CACHE = "oidc_cache_key"  # the HMAC key of the OIDC keys cached in Redis
DEIDENTIFY = "deidentify_key"  # the key of de-identified forwards' UID mapping (archive/routing/deidentify.py)


def secret_path(var_path: Path, name: str) -> Path:
    return var_path / "secrets" / name


def read_secret(var_path: Path, name: str) -> str | None:
    try:
        return secret_path(var_path, name).read_text(encoding="ascii").strip() or None
    except FileNotFoundError:
        return None


def ensure_secret(var_path: Path, name: str) -> str:
    """The secret, made now if it does not exist yet (created 0600, never readable by others)."""
    folder = var_path / "secrets"
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    folder.chmod(0o700)
    existing = read_secret(var_path, name)
    if existing:
        return existing
    value = secrets.token_urlsafe(32)  # URL-safe: it goes into DSNs as is
    fd = os.open(secret_path(var_path, name), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as out:
        out.write(value)
    return value
