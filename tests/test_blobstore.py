"""Blob atomicity for both backends: local disk, and S3 through the minio client against a local
S3-compatible server (moto in server mode; no MinIO server binary can be installed here)."""

from __future__ import annotations

import time

import pytest
from minio import Minio

from archive.blobstore import BlobNotFound, LocalBlobStore, S3BlobStore
from testkit.s3_server import moto_s3


@pytest.fixture(scope="module")
def s3_endpoint():
    with moto_s3() as endpoint:
        yield endpoint


@pytest.fixture(params=["local", "s3"])
def store(request, tmp_path):
    if request.param == "local":
        return LocalBlobStore(tmp_path / "blobs")
    endpoint = request.getfixturevalue("s3_endpoint")
    client = Minio(endpoint, access_key="testing", secret_key="testing", secure=False, region="us-east-1")
    return S3BlobStore(client, f"bucket-{time.monotonic_ns()}", tmp_path / "spool")


def test_commit_makes_bytes_readable_and_drops_spool(store, data_dir):
    source = next((data_dir / "dcm_qa_nih").rglob("*.dcm"))
    data = source.read_bytes()
    staged = store.stage_stream(iter([data[:1000], data[1000:]]))
    assert staged.size == len(data)
    assert not store.exists("t/a/b.dcm"), "nothing is visible before commit"
    store.commit(staged, "t/a/b.dcm")
    assert not staged.path.exists()
    assert store.read_bytes("t/a/b.dcm") == data
    assert store.size("t/a/b.dcm") == len(data)
    assert b"".join(store.iter_chunks("t/a/b.dcm", 128, 132)) == b"DICM"


def test_failed_stream_leaves_nothing(store):
    def broken():
        yield b"x" * 1000
        raise ConnectionResetError("client went away")

    before = set(store.spool_dir.iterdir())
    with pytest.raises(ConnectionResetError):
        store.stage_stream(broken())
    assert set(store.spool_dir.iterdir()) == before


def test_replace_is_all_or_nothing(store):
    store.put_bytes("t/x.dcm", b"first version")
    staged = store.stage_bytes(b"second version, longer")
    assert store.read_bytes("t/x.dcm") == b"first version"  # staging does not touch the stored object
    store.commit(staged, "t/x.dcm")
    assert store.read_bytes("t/x.dcm") == b"second version, longer"


def test_missing_and_delete(store):
    with pytest.raises(BlobNotFound):
        store.size("t/none.dcm")
    with pytest.raises(BlobNotFound):
        store.read_bytes("t/none.dcm")
    store.put_bytes("t/gone.dcm", b"bytes")
    store.delete("t/gone.dcm")
    assert not store.exists("t/gone.dcm")


def test_local_copy_gives_a_readable_path(store):
    store.put_bytes("t/y.dcm", b"abc")
    with store.local_copy("t/y.dcm") as path:
        assert path.read_bytes() == b"abc"


def test_local_keys_cannot_leave_the_store(tmp_path):
    store = LocalBlobStore(tmp_path / "blobs")
    with pytest.raises(ValueError):
        store.put_bytes("../escape.dcm", b"no")
    for outside in ("/etc/passwd", "a/../../escape.dcm", "..", ""):
        with pytest.raises(ValueError, match="leaves the store"):
            store.local_path(outside)
    assert store.local_path("a/./b/../c.dcm") == store.root / "a" / "c.dcm"
    assert not (tmp_path / "escape.dcm").exists()
