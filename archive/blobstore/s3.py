"""Blobs in MinIO or any S3-compatible store, through the `minio` client."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from minio import Minio
from minio.error import S3Error

from archive.blobstore.base import CHUNK, BlobInfo, BlobNotFound, BlobStore, StagedBlob

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
        return self.info(key).size

    def info(self, key: str) -> BlobInfo:
        try:
            found = self.client.stat_object(self.bucket, key)
        except S3Error as err:
            if err.code in _MISSING:
                raise BlobNotFound(key) from None
            raise
        # stat_object always sets both, from Content-Length and Last-Modified
        assert found.size is not None and found.last_modified is not None
        return BlobInfo(key, found.size, found.last_modified.timestamp())

    def list_blobs(self) -> Iterator[BlobInfo]:
        for found in self.client.list_objects(self.bucket, recursive=True):
            if found.is_dir or found.object_name is None:
                continue
            assert found.last_modified is not None  # a listed object always has it
            yield BlobInfo(found.object_name, found.size or 0, found.last_modified.timestamp())

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
