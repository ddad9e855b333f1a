"""The orphan sweeper on the real index: old blobs no row names go, everything else stays byte for byte."""

from __future__ import annotations

import asyncio
import hashlib
import os
import time
from pathlib import Path

import psycopg
import pytest
from dicomweb_client.api import DICOMwebClient
from minio import Minio

from archive.blobstore import LocalBlobStore, S3BlobStore
from archive.index.orphans import sweeper_turn
from archive.index.pool import open_index_pool
from archive.services.sweeper import sweep, sweep_forever, sweep_once
from testkit.metadata_waits import wait_metadata_settled
from tests.auth import auth_headers
from tests.conftest import run
from tests.test_blobstore import s3_endpoint  # noqa: F401 - the S3 server fixture
from tests.test_delete import _one_series

TENANT = "sweep"
HOUR = 3600.0


@pytest.fixture(scope="module")
def stored(stack, data_dir) -> list:
    """A series stored through STOW-RS, with its metadata document generated."""
    datasets = _one_series(data_dir, 3)
    DICOMwebClient(url=stack.url("/dicomweb"), headers=auth_headers(TENANT)).store_instances(datasets=datasets)
    wait_metadata_settled(stack.settings, TENANT, str(datasets[0].SeriesInstanceUID))
    return datasets


def referenced_keys(settings) -> set[str]:
    with psycopg.connect(settings.effective_postgres_dsn()) as conn:
        rows = conn.execute("""SELECT blob_key FROM instance UNION SELECT transcoded_key FROM instance
                               UNION SELECT metadata_key FROM series""").fetchall()
    return {r[0] for r in rows if r[0]}


def digests(root: Path, keys: set[str]) -> dict[str, str]:
    return {key: hashlib.sha256((root / key).read_bytes()).hexdigest() for key in keys if (root / key).exists()}


def plant(root: Path, key: str, age: float = 0.0) -> Path:
    path = root / key
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"left behind by a crash " + key.encode())
    then = time.time() - age
    os.utime(path, (then, then))
    return path


def age_tenant(root: Path, tenant: str, age: float) -> None:
    """Make every blob of the tenant old, so that the sweeper judges the referenced ones too."""
    then = time.time() - age
    for path in (root / tenant).rglob("*"):
        if path.is_file():
            os.utime(path, (then, then))


def sweep_with(settings, blobs, grace: float, **options):
    async def go():
        pool = await open_index_pool(settings.effective_postgres_dsn(), max_size=3)
        try:
            return await sweep_once(blobs, pool, grace, **options)
        finally:
            await pool.close()

    return run(go())


def test_old_orphans_go_fresh_ones_and_referenced_blobs_stay(stack, stored):
    root = stack.settings.var_path / "blobs"
    age_tenant(root, TENANT, 2 * HOUR)
    old = plant(root, f"{TENANT}/nodate/00aa/00bb/00cc.0123456789ab.dcm", age=2 * HOUR)
    fresh = plant(root, f"{TENANT}/nodate/00aa/00bb/00dd.0123456789ab.dcm")
    stray = plant(root, "not-a-tenant-here/notes.txt", age=2 * HOUR)  # not the archive's: never judged
    referenced = referenced_keys(stack.settings)
    assert {k for k in referenced if k.startswith(f"{TENANT}/")}, "the stored series should have blobs"
    before = digests(root, referenced)

    report = sweep_with(stack.settings, LocalBlobStore(root), HOUR)
    removed = set(report.removed_keys)
    assert old.relative_to(root).as_posix() in removed and not old.exists()
    assert report.removed_bytes >= len(b"left behind by a crash ") and report.removed == len(removed)
    assert fresh.exists() and stray.exists()
    assert not removed & referenced
    assert digests(root, referenced) == before, "a referenced blob was removed or changed"
    fresh.unlink()
    stray.unlink()


def test_cli_dry_run_lists_and_sweep_removes(stack, stored):
    root = stack.settings.var_path / "blobs"
    old = plant(root, f"{TENANT}/nodate/00aa/00bb/00ee.0123456789ab.dcm", age=2 * HOUR)
    key = old.relative_to(root).as_posix()
    dry = stack.cli("sweep", "--dry-run", "--grace", str(HOUR))
    assert dry.returncode == 0, dry.stdout + dry.stderr
    assert f"would remove {key}" in dry.stdout and "scanned" in dry.stdout and old.exists()
    real = stack.cli("sweep", "--grace", str(HOUR))
    assert real.returncode == 0, real.stdout + real.stderr
    assert f"removed {key}" in real.stdout and "removed" in real.stdout.splitlines()[-1] and not old.exists()


def test_one_sweep_at_a_time(stack, stored):
    async def go():
        pool = await open_index_pool(stack.settings.effective_postgres_dsn(), max_size=3)
        try:
            async with sweeper_turn(pool) as mine:
                assert mine
                return await sweep_once(LocalBlobStore(stack.settings.var_path / "blobs"), pool, HOUR)
        finally:
            await pool.close()

    assert run(go()) is None


def test_periodic_sweep_runs_on_its_interval(stack, stored):
    root = stack.settings.var_path / "blobs"
    old = plant(root, f"{TENANT}/nodate/00aa/00bb/00ff.0123456789ab.dcm", age=2 * HOUR)
    settings = stack.settings.with_values(sweep_interval_seconds=0.2, orphan_grace_seconds=HOUR)

    async def go():
        pool = await open_index_pool(settings.effective_postgres_dsn(), max_size=3)
        task = asyncio.create_task(sweep_forever(LocalBlobStore(root), pool, settings.ingest))
        try:
            for _ in range(100):
                if not old.exists():
                    return True
                await asyncio.sleep(0.1)
            return False
        finally:
            task.cancel()
            await pool.close()

    assert run(go()), "the periodic sweep did not remove the orphan"


def test_s3_listing_and_sweep(stack, stored, s3_endpoint, tmp_path):  # noqa: F811
    client = Minio(s3_endpoint, access_key="testing", secret_key="testing", secure=False, region="us-east-1")
    blobs = S3BlobStore(client, f"sweep-{time.monotonic_ns()}", tmp_path / "spool")
    kept = sorted(k for k in referenced_keys(stack.settings) if k.startswith(f"{TENANT}/"))[0]
    orphan = f"{TENANT}/nodate/00aa/00bb/0100.0123456789ab.dcm"
    for key in (kept, orphan):
        blobs.put_bytes(key, key.encode())
    listed = {b.key: b for b in blobs.list_blobs()}
    assert set(listed) == {kept, orphan} and listed[orphan].size == len(orphan)
    assert abs(listed[orphan].modified - time.time()) < 300 and blobs.info(orphan).size == len(orphan)

    async def go():
        pool = await open_index_pool(stack.settings.effective_postgres_dsn(), max_size=2)
        try:
            return await sweep(blobs, pool, 0.0)  # S3 cannot back-date an object: no grace here
        finally:
            await pool.close()

    report = run(go())
    assert report.removed_keys == [orphan] and report.removed_bytes == len(orphan)
    assert [b.key for b in blobs.list_blobs()] == [kept] and blobs.read_bytes(kept) == kept.encode()
