"""Two blob stores seen as one: new objects go to the hot store, and a lifecycle rule with
`action = "tier"` moves old studies' objects to the cold one (activities/lifecycle_steps.py).

Keys are written once and never again (archive/blobstore/layout.py), so a key names the same bytes
in either store; a read tries hot and then cold, which is why every read path (WADO-RS, WADO-URI,
C-MOVE, C-GET, the workflow's steps) follows a moved object without knowing where it went. The
index's `instance.tier` says where each object is for accounting; the reads do not need it, so a
crash between the copy and that row's update leaves nothing unreadable.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from archive.blobstore.base import BlobInfo, BlobNotFound, BlobStore, StagedBlob


class TieredBlobStore(BlobStore):
    def __init__(self, hot: BlobStore, cold: BlobStore) -> None:
        super().__init__(hot.spool_dir)
        self.hot = hot
        self.cold = cold

    def make_durable(self, staged: StagedBlob) -> StagedBlob:
        return self.hot.make_durable(staged)

    def commit(self, staged: StagedBlob, key: str) -> None:
        self.hot.commit(staged, key)

    def iter_chunks(self, key: str, start: int = 0, end: int | None = None) -> Iterator[bytes]:
        # hot first without asking whether it is there (a stat per read, a request on S3); cold
        # only when hot has nothing, never after some bytes went out
        began = False
        try:
            for chunk in self.hot.iter_chunks(key, start, end):
                began = True
                yield chunk
        except BlobNotFound:
            if began:
                raise
            yield from self.cold.iter_chunks(key, start, end)

    def size(self, key: str) -> int:
        return self.info(key).size

    def info(self, key: str) -> BlobInfo:
        try:
            return self.hot.info(key)
        except BlobNotFound:
            return self.cold.info(key)

    def exists(self, key: str) -> bool:
        return self.hot.exists(key) or self.cold.exists(key)

    def delete(self, key: str) -> None:
        self.hot.delete(key)
        self.cold.delete(key)

    def list_blobs(self) -> Iterator[BlobInfo]:
        yield from self.hot.list_blobs()
        yield from self.cold.list_blobs()

    def local_path(self, key: str) -> Path | None:
        return self._holder(key).local_path(key)

    @contextmanager
    def local_copy(self, key: str) -> Iterator[Path]:
        with self._holder(key).local_copy(key) as path:
            yield path

    def _holder(self, key: str) -> BlobStore:
        return self.hot if self.hot.exists(key) else self.cold

    def describe(self) -> str:
        return f"{self.hot.describe()}, cold tier {self.cold.describe()}"


def move_to_cold(store: TieredBlobStore, key: str, sha256: str) -> bool:
    """Copy `key` to the cold store, check the copy against the index's checksum, then remove the hot
    copy. Idempotent at every point: a re-run after a crash finds the hot copy still there (copied
    again) or gone (the cold copy was verified before it went). False when neither store has it."""
    if store.hot.exists(key):
        staged = store.cold.stage_stream(store.hot.iter_chunks(key))
        if staged.sha256 != sha256:
            store.cold.discard(staged)
            raise ChecksumMismatch(f"{key}: the hot copy's checksum is {staged.sha256}, the index says {sha256}")
        store.cold.commit(staged, key)
        _check_copy(store.cold, key, sha256)
        store.hot.delete(key)
        return True
    if store.cold.exists(key):
        _check_copy(store.cold, key, sha256)
        return True
    return False


def _check_copy(cold: BlobStore, key: str, sha256: str) -> None:
    digest = hashlib.sha256()
    for chunk in cold.iter_chunks(key):
        digest.update(chunk)
    if digest.hexdigest() != sha256:
        raise ChecksumMismatch(f"{key}: the cold copy's checksum is {digest.hexdigest()}, the index says {sha256}")


class ChecksumMismatch(RuntimeError):
    """A copy is not the bytes the index acknowledged: nothing is removed."""
