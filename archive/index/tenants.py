"""The tenants the index has a record of: a row is made by the first object, worklist item, workitem
or storage commitment stored for a tenant."""

from __future__ import annotations

from psycopg import AsyncConnection


async def tenant_names(conn: AsyncConnection) -> set[str]:
    return {str(row[0]) for row in await (await conn.execute("SELECT name FROM tenant")).fetchall()}
