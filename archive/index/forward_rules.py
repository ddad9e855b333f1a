"""Forwarding rules added at run time (/admin/forwarding), one row each: the rule as the settings
file would hold it (JSON), its tenant (None: every tenant) for scoping, and who added it."""

from __future__ import annotations

from typing import Any

from psycopg import AsyncConnection
from psycopg.types.json import Jsonb


async def stored_rules(conn: AsyncConnection) -> list[tuple[str, dict[str, Any]]]:
    """(name, rule as JSON) of every rule added at run time, oldest first."""
    rows = await (await conn.execute("SELECT name, rule FROM forward_rule ORDER BY created_at, name")).fetchall()
    return [(str(name), dict(rule)) for name, rule in rows]


async def add_rule(conn: AsyncConnection, name: str, tenant: str | None, rule: dict[str, Any], by: str) -> bool:
    """False when a rule of that name is stored already."""
    cursor = await conn.execute(
        "INSERT INTO forward_rule (name, tenant, rule, created_by) VALUES (%s, %s, %s, %s) ON CONFLICT (name) DO NOTHING",
        (name, tenant, Jsonb(rule), by),
    )
    return cursor.rowcount == 1


async def remove_rule(conn: AsyncConnection, name: str) -> bool:
    cursor = await conn.execute("DELETE FROM forward_rule WHERE name = %s", (name,))
    return cursor.rowcount == 1
