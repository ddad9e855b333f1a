"""The index and the cache on the real PostgreSQL and Redis that `dicomflow up` started."""

from __future__ import annotations

import re
import uuid

import psycopg
import psycopg.conninfo
import psycopg.sql
import pytest

from archive.cache import Cache
from archive.dicom.attributes import extract
from archive.dicom.header import read_header
from archive.identity.tenants import BadTenant
from archive.index.instances import find_instance, insert_instance
from archive.index.pool import open_index_pool
from archive.index.schema import MIGRATIONS, migrate, schema_version
from tests.conftest import run

# what the schema is made of, as text: relations with their columns and privileges, indexes,
# constraints, triggers and functions of the public schema
CATALOG = [
    """SELECT c.relname, c.relkind::text, coalesce(c.relacl::text, ''),
              coalesce((SELECT string_agg(a.attname || ' ' || format_type(a.atttypid, a.atttypmod) || ' '
                                          || a.attnotnull::text || ' ' || coalesce(pg_get_expr(d.adbin, d.adrelid), ''),
                                          ', ' ORDER BY a.attnum)
                        FROM pg_attribute a LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
                        WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped), '')
       FROM pg_class c WHERE c.relnamespace = 'public'::regnamespace ORDER BY 1, 2""",
    "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = 'public' ORDER BY 1",
    "SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid) FROM pg_constraint"
    " WHERE connamespace = 'public'::regnamespace ORDER BY 1, 2",
    "SELECT pg_get_triggerdef(oid) FROM pg_trigger WHERE NOT tgisinternal ORDER BY 1",
    "SELECT proname, md5(prosrc) FROM pg_proc WHERE pronamespace = 'public'::regnamespace ORDER BY 1, 2",
]


async def _snapshot(conn: psycopg.AsyncConnection) -> tuple[list, list]:
    """schema_version's rows as stored (xmin changes if a row is rewritten, even to the same values)
    and the catalog."""
    rows = await (await conn.execute("SELECT version, applied_at, xmin::text FROM schema_version ORDER BY version")).fetchall()
    catalog = [await (await conn.execute(query)).fetchall() for query in CATALOG]
    return rows, catalog


def _dsn_for(dsn: str, dbname: str) -> str:
    return psycopg.conninfo.make_conninfo(dsn, dbname=dbname)


@pytest.fixture(scope="module")
def scratch_owner(tmp_path_factory):
    """The owner's DSN of a PostgreSQL of its own, started as `up` starts the index: the stack's
    owner has no password once `up` has migrated (cluster/services/postgres.py)."""
    from archive.config.settings import load_settings
    from cluster.services import postgres
    from testkit.running_stack import free_port

    settings = load_settings(
        var_dir=str(tmp_path_factory.mktemp("scratch") / "var"), postgres_port=free_port(), bind_host="127.0.0.1"
    )
    service, owner = postgres.start_postgres(settings)
    try:
        yield owner
    finally:
        service.stop()


def test_migrations_build_an_empty_database_once(scratch_owner):
    """On a new, empty database (made by the schema owner, as `up` makes the index): one row per
    migration in schema_version, every table and column the migrations create, and a second run
    changes nothing at all. The owner too meets the audit trail's append-only trigger."""
    owner = scratch_owner
    scratch = f"migrate_{uuid.uuid4().hex[:12]}"
    created_tables = {m.lower() for sql in MIGRATIONS for m in re.findall(r"CREATE TABLE (?:IF NOT EXISTS )?(\w+)", sql)}
    added_columns = {
        (t.lower(), c.lower()) for sql in MIGRATIONS for t, c in re.findall(r"ALTER TABLE (\w+) ADD COLUMN (\w+)", sql)
    }
    assert len(created_tables) >= 10 and added_columns, "the migrations' text no longer reads as expected"

    async def go():
        async with await psycopg.AsyncConnection.connect(_dsn_for(owner, "postgres"), autocommit=True) as admin:
            await admin.execute(psycopg.sql.SQL("CREATE DATABASE {}").format(psycopg.sql.Identifier(scratch)))
        try:
            async with await psycopg.AsyncConnection.connect(_dsn_for(owner, scratch), autocommit=True) as conn:
                assert await schema_version(conn) == 0
                await migrate(conn)
                first = await _snapshot(conn)
                tables = {
                    r[0]
                    for r in await (await conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")).fetchall()
                }
                columns = set(
                    await (
                        await conn.execute(
                            "SELECT table_name, column_name FROM information_schema.columns WHERE table_schema = 'public'"
                        )
                    ).fetchall()
                )
                await migrate(conn)
                second = await _snapshot(conn)
                await conn.execute(
                    "INSERT INTO audit_event (occurred_at, event_code, event_name, action, outcome, subject, method,"
                    " source) VALUES (now(), 110114, 'User Authentication', 'E', 0, 'owner', 'none', 'test')"
                )
                for statement in ("UPDATE audit_event SET subject = 'x'", "DELETE FROM audit_event", "TRUNCATE audit_event"):
                    with pytest.raises(psycopg.errors.RaiseException, match="append-only"):
                        await conn.execute(statement)
            return first, second, tables, columns
        finally:
            async with await psycopg.AsyncConnection.connect(_dsn_for(owner, "postgres"), autocommit=True) as admin:
                await admin.execute(
                    psycopg.sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(psycopg.sql.Identifier(scratch))
                )

    first, second, tables, columns = run(go())
    rows, catalog = first
    assert [r[0] for r in rows] == list(range(1, len(MIGRATIONS) + 1))
    assert all(r[1] is not None for r in rows)
    assert created_tables <= tables, f"migrations recorded but not applied: {sorted(created_tables - tables)}"
    assert added_columns <= columns, f"columns not added: {sorted(added_columns - columns)}"
    assert second == first, "a second migrate() on an up-to-date index changed the schema or schema_version"


def test_migrate_on_the_running_index_changes_nothing(settings):
    """The index `up` migrated: every migration is recorded, and migrate() as the application's role
    (what every pool does on open; no DDL rights) succeeds and leaves schema_version and the schema
    exactly as they were."""

    async def go():
        async with await psycopg.AsyncConnection.connect(settings.effective_postgres_dsn(), autocommit=True) as conn:
            before = await _snapshot(conn)
            await migrate(conn)
            after = await _snapshot(conn)
            return before, after

    before, after = run(go())
    assert [r[0] for r in before[0]] == list(range(1, len(MIGRATIONS) + 1))
    assert after == before


def test_instance_row_round_trip(settings, data_dir):
    path = next((data_dir / "dcm_qa_nih").rglob("*.dcm"))
    attributes = extract(read_header(path).dataset)

    async def go():
        pool = await open_index_pool(settings.effective_postgres_dsn())
        try:
            async with pool.connection() as conn, conn.transaction():
                inserted = await insert_instance(
                    conn,
                    "roundtrip",
                    attributes,
                    transfer_syntax="1.2.840.10008.1.2.1",
                    blob_key="k",
                    size=10,
                    sha256="ab",
                    source="test",
                )
                again = await insert_instance(
                    conn,
                    "roundtrip",
                    attributes,
                    transfer_syntax="1.2.840.10008.1.2.1",
                    blob_key="k",
                    size=10,
                    sha256="ab",
                    source="test",
                )
            async with pool.connection() as conn:
                found = await find_instance(conn, "roundtrip", attributes.sop_uid)
                other_tenant = await find_instance(conn, "someoneelse", attributes.sop_uid)
                study = await (
                    await conn.execute(
                        "SELECT patient_name, study_date, modalities FROM study WHERE tenant='roundtrip' AND study_uid=%s",
                        (attributes.study_uid,),
                    )
                ).fetchone()
            return inserted, again, found, other_tenant, study
        finally:
            await pool.close()

    inserted, again, found, other_tenant, study = run(go())
    assert inserted and not again
    assert found.sha256 == "ab" and found.state == "received"
    assert other_tenant is None
    assert study[0] == attributes.patient_name and study[1] == attributes.study_date


def test_cache_keys_are_tenant_scoped_with_ttl(settings):
    async def go():
        cache = Cache.from_url(settings.effective_redis_url(), default_ttl=60)
        try:
            await cache.set("tenanta", "series", "1.2.3", value=b"A")
            await cache.set("tenantb", "series", "1.2.3", value=b"B")
            a, b = await cache.get("tenanta", "series", "1.2.3"), await cache.get("tenantb", "series", "1.2.3")
            ttl = await cache.ttl("tenanta", "series", "1.2.3")
            removed = await cache.delete_prefix("tenanta", "series")
            after_a, after_b = await cache.get("tenanta", "series", "1.2.3"), await cache.get("tenantb", "series", "1.2.3")
            return a, b, ttl, removed, after_a, after_b
        finally:
            await cache.close()

    a, b, ttl, removed, after_a, after_b = run(go())
    assert (a, b) == (b"A", b"B")
    assert 0 < ttl <= 60
    assert removed == 1 and after_a is None and after_b == b"B"


def test_cache_refuses_keys_that_could_cross_tenants(settings):
    cache = Cache(client=None, default_ttl=1)
    with pytest.raises(BadTenant):
        cache.key("a:b", "x")


def test_finished_retrieves_are_forgotten_after_their_retention(settings):
    from archive.index import retrieves

    old, fresh, running = "prune-old", "prune-fresh", "prune-running"
    with psycopg.connect(settings.effective_postgres_dsn(), autocommit=True) as conn:
        for rid, finished in ((old, "now() - interval '8 days'"), (fresh, "now()"), (running, "NULL")):
            conn.execute(
                f"INSERT INTO retrieve (id, tenant, requested_by, destination, total, finished_at)"
                f" VALUES (%s, 'default', 'T', 'D', 1, {finished})",
                (rid,),
            )
            conn.execute("INSERT INTO retrieve_item (retrieve_id, position, sop_uid) VALUES (%s, 1, '1.2.3')", (rid,))

    async def go():
        pool = await open_index_pool(settings.effective_postgres_dsn(), max_size=1)
        try:
            return await retrieves.prune(pool, 7)
        finally:
            await pool.close()

    assert run(go()) >= 1
    with psycopg.connect(settings.effective_postgres_dsn()) as conn:
        left = {r[0] for r in conn.execute("SELECT id FROM retrieve WHERE id LIKE 'prune-%'").fetchall()}
        items = {r[0] for r in conn.execute("SELECT retrieve_id FROM retrieve_item WHERE retrieve_id LIKE 'prune-%'").fetchall()}
    assert left == items == {fresh, running}
