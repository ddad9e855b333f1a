"""The hot and cold blob stores seen as one (archive/blobstore/tiered.py): reads fall through to
the cold store, a move checks its copy against the index's checksum before the hot copy goes, and a
move interrupted at any point finishes on a re-run without copying twice or losing the bytes."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from archive.blobstore.base import BlobNotFound
from archive.blobstore.local import LocalBlobStore
from archive.blobstore.tiered import ChecksumMismatch, TieredBlobStore, move_to_cold

KEY = "t/20240101/aa/bb/cc.dcm"


@pytest.fixture
def store(tmp_path: Path, data_dir: Path) -> tuple[TieredBlobStore, bytes]:
    tiered = TieredBlobStore(LocalBlobStore(tmp_path / "hot"), LocalBlobStore(tmp_path / "cold"))
    data = next(p for p in sorted((data_dir / "dcm_qa_nih").rglob("*")) if p.is_file()).read_bytes()  # a Siemens MR image
    tiered.put_bytes(KEY, data)
    return tiered, data


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_new_objects_go_hot_and_a_move_leaves_them_readable_from_cold(store):
    tiered, data = store
    assert tiered.hot.exists(KEY) and not tiered.cold.exists(KEY)
    assert move_to_cold(tiered, KEY, _sha(data))
    assert not tiered.hot.exists(KEY) and tiered.cold.read_bytes(KEY) == data
    assert tiered.read_bytes(KEY) == data
    assert b"".join(tiered.iter_chunks(KEY, 128, 132)) == data[128:132]
    assert tiered.size(KEY) == len(data)
    with tiered.local_copy(KEY) as path:
        assert path.read_bytes() == data
    assert [b.key for b in tiered.list_blobs()] == [KEY]


def test_a_copy_that_does_not_match_the_index_removes_nothing(store):
    tiered, data = store
    with pytest.raises(ChecksumMismatch):
        move_to_cold(tiered, KEY, _sha(b"what the index acknowledged was something else"))
    assert tiered.hot.read_bytes(KEY) == data and not tiered.cold.exists(KEY)


def test_a_move_interrupted_after_the_copy_finishes_on_a_re_run(store):
    tiered, data = store
    tiered.cold.put_bytes(KEY, data)  # copied, then the worker died before the hot copy went
    assert tiered.read_bytes(KEY) == data
    assert move_to_cold(tiered, KEY, _sha(data))
    assert not tiered.hot.exists(KEY) and tiered.cold.read_bytes(KEY) == data


def test_a_move_interrupted_after_the_hot_copy_went_is_only_checked_again(store):
    tiered, data = store
    assert move_to_cold(tiered, KEY, _sha(data))
    assert move_to_cold(tiered, KEY, _sha(data))  # the re-run: nothing to copy, the cold copy checked
    tiered.cold.put_bytes(KEY, data[:-1] + bytes([data[-1] ^ 0xFF]))  # a cold copy damaged since
    with pytest.raises(ChecksumMismatch):
        move_to_cold(tiered, KEY, _sha(data))


def test_an_object_gone_from_both_is_reported_not_invented(store):
    tiered, data = store
    tiered.delete(KEY)
    assert not move_to_cold(tiered, KEY, _sha(data))
    with pytest.raises(BlobNotFound):
        tiered.read_bytes(KEY)
