"""Blobs in MinIO or any S3-compatible store, through the `minio` client."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from minio import Minio
from minio.error import S3Error

from archive.blobstore.base import CHUNK, BlobNotFound, BlobStore, StagedBlob

_MISSING = {"NoSuchKey", "NoSuchObject", "NotFound"}


class S3BlobStore(BlobStore):
    def __init__(self, client: Minio, bucket: str, spool_dir: Path) -> None:
        super().__init__(spool_dir)
        self.client = client
        self.bucket = bucket
        if not client.bucket_exists(bucket):
            client.make_bucket(bucket)

    def commit(self, staged: StagedBlob, key: str) -> None:
        # PUT returns once the store has the whole object durably; then the spool file can go.
        self.client.fput_object(self.bucket, key, str(staged.path), content_type="application/octet-stream")
        staged.path.unlink(missing_ok=True)

    def iter_chunks(self, key: str, start: int = 0, end: int | None = None) -> Iterator[bytes]:
        length = 0 if end is None else max(0, end - start)
        if end is not None and length == 0:
            return
        try:
            response = self.client.get_object(self.bucket, key, offset=start, length=length)
        except S3Error as err:
            if err.code in _MISSING:
                raise BlobNotFound(key) from None
            raise
        try:
            yield from response.stream(CHUNK)
        finally:
            response.close()
            response.release_conn()

    def size(self, key: str) -> int:
        try:
            size = self.client.stat_object(self.bucket, key).size
        except S3Error as err:
            if err.code in _MISSING:
                raise BlobNotFound(key) from None
            raise
        assert size is not None  # stat_object always sets it from Content-Length
        return size

    def exists(self, key: str) -> bool:
        try:
            self.size(key)
        except BlobNotFound:
            return False
        return True

    def delete(self, key: str) -> None:
        self.client.remove_object(self.bucket, key)

    def local_path(self, key: str) -> Path | None:
        return None

    def describe(self) -> str:
        return f"s3 bucket {self.bucket} at {self.client._base_url.host}"  # noqa: SLF001
