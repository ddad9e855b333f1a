"""What the application's database role may do: read and write the index, and only append to the
audit trail. The schema owner runs this after every migration, so tables added later are covered.

With the application on its own role, a compromised archive process cannot rewrite or erase the
audit trail (PS3.15 A.5 expects it to be tamper-evident); the append-only trigger on the table
stays as a second wall, against the owner's own mistakes.
"""

from __future__ import annotations

from psycopg import AsyncConnection, sql

APPEND_ONLY_TABLES = ("audit_event",)
READ_ONLY_TABLES = ("schema_version",)


async def grant_application_role(conn: AsyncConnection, role: str) -> bool:
    """Grant `role` the index; False (and nothing done) when it is the connected role itself."""
    row = await (await conn.execute("SELECT current_user")).fetchone()
    if row and row[0] == role:
        return False
    who = sql.Identifier(role)
    async with conn.transaction():
        for statement in (
            "GRANT USAGE ON SCHEMA public TO {who}",
            "GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {who}",
            "GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO {who}",
        ):
            await conn.execute(sql.SQL(statement).format(who=who))
        for table in APPEND_ONLY_TABLES:
            await conn.execute(
                sql.SQL("REVOKE UPDATE, DELETE, TRUNCATE ON {table} FROM {who}").format(table=sql.Identifier(table), who=who)
            )
        for table in READ_ONLY_TABLES:
            await conn.execute(
                sql.SQL("REVOKE INSERT, UPDATE, DELETE, TRUNCATE ON {table} FROM {who}").format(
                    table=sql.Identifier(table), who=who
                )
            )
        await _grant_maintain(conn, who)
    return True


async def _grant_maintain(conn: AsyncConnection, who: sql.Identifier) -> None:
    """ANALYZE and VACUUM of the index tables (PostgreSQL 17's MAINTAIN), so a bulk import or a
    migration can refresh the planner's statistics without the owner, who has no password outside
    `up`. Not on the audit trail: MAINTAIN also allows LOCK TABLE."""
    row = await (await conn.execute("SELECT current_setting('server_version_num')::int")).fetchone()
    if not row or row[0] < 170000:
        return
    tables = await (await conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")).fetchall()
    for (table,) in tables:
        if table not in APPEND_ONLY_TABLES:
            await conn.execute(sql.SQL("GRANT MAINTAIN ON {table} TO {who}").format(table=sql.Identifier(table), who=who))
