"""Blob stores: local disk or S3/MinIO, chosen by settings, with an optional cold tier."""

from __future__ import annotations

from pathlib import Path

from minio import Minio

from archive.blobstore.base import BlobInfo, BlobNotFound, BlobStore, StagedBlob
from archive.blobstore.local import LocalBlobStore
from archive.blobstore.s3 import S3BlobStore
from archive.blobstore.tiered import TieredBlobStore
from archive.config.sections import StorageSettings

__all__ = [
    "BlobInfo",
    "BlobNotFound",
    "BlobStore",
    "StagedBlob",
    "LocalBlobStore",
    "S3BlobStore",
    "TieredBlobStore",
    "open_blob_store",
]


def open_blob_store(storage: StorageSettings, var_path: Path) -> BlobStore:
    """The blob store the settings name: var_dir/blobs or S3, and behind it the cold tier if any."""
    hot = _hot_store(storage, var_path)
    cold = _cold_store(storage, var_path)
    return hot if cold is None else TieredBlobStore(hot, cold)


def _hot_store(s: StorageSettings, var_path: Path) -> BlobStore:
    if s.backend == "local":
        return LocalBlobStore(var_path / "blobs")
    endpoint = s.s3_endpoint
    assert endpoint  # blob_backend is "s3" only when an endpoint is set
    return _s3_store(
        endpoint,
        s.s3_access_key,
        s.s3_secret_key,
        s.s3_secure,
        s.s3_region,
        s.s3_bucket,
        var_path / "spool",
    )


def _cold_store(s: StorageSettings, var_path: Path) -> BlobStore | None:
    if s.cold_backend is None:
        return None
    if s.cold_backend == "local":
        assert s.cold_blob_dir is not None  # cold_backend says so
        return LocalBlobStore(Path(s.cold_blob_dir))
    endpoint = s.cold_s3_endpoint
    assert endpoint  # cold_backend is "s3" only when an endpoint is set
    return _s3_store(
        endpoint, s.cold_s3_access_key, s.cold_s3_secret_key, s.cold_s3_secure, s.cold_s3_region,
        s.cold_s3_bucket, var_path / "spool-cold",
    )  # fmt: skip


def _s3_store(
    endpoint: str, access_key: str | None, secret_key: str | None, secure: bool, region: str | None, bucket: str, spool: Path
) -> S3BlobStore:
    client = Minio(endpoint, access_key=access_key, secret_key=secret_key, secure=secure, region=region)
    return S3BlobStore(client, bucket, spool)
