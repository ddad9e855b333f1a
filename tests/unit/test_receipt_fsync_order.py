"""Issue 33's C-STORE stall: a receipt's transaction held its pooled connection, and the rows of a
new study and series that other receipts into that study wait on, across the fsync of the object's
data. The data is now made durable while the object is prepared, on the receiving thread; the
commit inside the transaction only moves it into place (rename, then the directory's fsync)."""

from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path

import pytest

from archive.blobstore import LocalBlobStore
from archive.services.receipt import Prepared, Receiver

GE_MR = "dcm_qa_ge/In/SliceTiming/2_Ax_fMRI_HB8_72sl_int_asc/0032.dcm"  # a scanner's own file


@pytest.fixture
def fsyncs(monkeypatch) -> list[str]:
    """What each os.fsync call flushed: "file" or "dir"."""
    seen: list[str] = []
    real = os.fsync

    def recording(fd: int) -> None:
        seen.append("dir" if stat.S_ISDIR(os.fstat(fd).st_mode) else "file")
        real(fd)

    monkeypatch.setattr(os, "fsync", recording)
    return seen


def _staged(blobs: LocalBlobStore, source: Path):
    spool = blobs.new_spool_file()
    shutil.copyfile(source, spool)
    return blobs.stage_file(spool)


def test_prepare_makes_the_data_durable_and_commit_only_moves_it(tmp_path, data_dir, fsyncs) -> None:
    blobs = LocalBlobStore(tmp_path / "blobs")
    receiver = Receiver(blobs, pool=None)  # type: ignore[arg-type]  # prepare touches no index
    prepared = receiver.prepare("default", _staged(blobs, data_dir / GE_MR))
    assert isinstance(prepared, Prepared), prepared
    assert prepared.staged.synced and fsyncs == ["file"], "the data is flushed before any transaction opens"
    fsyncs.clear()
    blobs.commit(prepared.staged, "default/study/series/instance.dcm")
    assert "file" not in fsyncs and fsyncs[-1] == "dir", fsyncs
    assert (tmp_path / "blobs" / "default/study/series/instance.dcm").read_bytes() == (data_dir / GE_MR).read_bytes()


def test_a_blob_staged_elsewhere_is_still_flushed_by_its_commit(tmp_path, data_dir, fsyncs) -> None:
    """Compression, corrections and transcoding commit blobs no receipt prepared."""
    blobs = LocalBlobStore(tmp_path / "blobs")
    blobs.commit(_staged(blobs, data_dir / GE_MR), "default/a/b/c.dcm")
    assert fsyncs[0] == "file" and fsyncs[-1] == "dir"


def test_an_object_refused_while_prepared_is_not_flushed(tmp_path, fsyncs) -> None:
    blobs = LocalBlobStore(tmp_path / "blobs")
    spool = blobs.new_spool_file()
    spool.write_bytes(b"\0" * 128 + b"DICM" + b"\xff" * 64)
    refused = Receiver(blobs, pool=None).prepare("default", blobs.stage_file(spool))  # type: ignore[arg-type]
    assert not isinstance(refused, Prepared) and fsyncs == [] and not spool.exists()
