"""A corrected object is a new version: the stored bytes are read, the changed attributes set, and
the result written under a new key; the stored object is never written over (its key goes only
after the index points at the new one). Pixel data and every other attribute are copied as they
are, in the transfer syntax they were stored in."""

from __future__ import annotations

from dataclasses import dataclass

from pydicom import dcmread

from archive.blobstore.base import BlobStore, StagedBlob
from archive.corrections.changes import Changes


@dataclass(frozen=True)
class Rewritten:
    staged: StagedBlob
    before: dict[str, str | None]  # the changed attributes' values in the stored version


def rewrite(blobs: BlobStore, key: str, changes: Changes) -> Rewritten:
    """The stored object `key` with `changes` applied, staged (not yet committed under any key)."""
    with blobs.local_copy(key) as path:
        ds = dcmread(path)
    before = changes.apply(ds)
    out = blobs.new_spool_file()
    try:
        ds.save_as(out, enforce_file_format=True)
        return Rewritten(blobs.stage_file(out), before)
    except BaseException:
        out.unlink(missing_ok=True)
        raise
