"""The index and the cache on the real PostgreSQL and Redis that `dicomflow up` started."""

from __future__ import annotations

import psycopg
import pytest

from archive.attributes import extract
from archive.cache import Cache
from archive.header import read_header
from archive.index.instances import find_instance, insert_instance
from archive.index.pool import open_index_pool
from archive.index.schema import MIGRATIONS, migrate
from archive.tenants import BadTenant
from tests.conftest import run


def test_migrations_are_versioned_and_idempotent(settings):
    async def go():
        async with await psycopg.AsyncConnection.connect(settings.effective_postgres_dsn(), autocommit=True) as conn:
            assert await migrate(conn) == len(MIGRATIONS)
            assert await migrate(conn) == len(MIGRATIONS)
            rows = await (await conn.execute("SELECT version FROM schema_version ORDER BY version")).fetchall()
            return [r[0] for r in rows]

    assert run(go()) == list(range(1, len(MIGRATIONS) + 1))


def test_instance_row_round_trip(settings, data_dir):
    path = next((data_dir / "dcm_qa_nih").rglob("*.dcm"))
    attributes = extract(read_header(path).dataset)

    async def go():
        pool = await open_index_pool(settings.effective_postgres_dsn())
        try:
            async with pool.connection() as conn, conn.transaction():
                inserted = await insert_instance(conn, "roundtrip", attributes, transfer_syntax="1.2.840.10008.1.2.1",
                                                 blob_key="k", size=10, sha256="ab", source="test")
                again = await insert_instance(conn, "roundtrip", attributes, transfer_syntax="1.2.840.10008.1.2.1",
                                              blob_key="k", size=10, sha256="ab", source="test")
            async with pool.connection() as conn:
                found = await find_instance(conn, "roundtrip", attributes.sop_uid)
                other_tenant = await find_instance(conn, "someoneelse", attributes.sop_uid)
                study = await (await conn.execute(
                    "SELECT patient_name, study_date, modalities FROM study WHERE tenant='roundtrip' AND study_uid=%s",
                    (attributes.study_uid,))).fetchone()
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
            conn.execute(f"INSERT INTO retrieve (id, tenant, requested_by, destination, total, finished_at)"
                         f" VALUES (%s, 'default', 'T', 'D', 1, {finished})", (rid,))
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
