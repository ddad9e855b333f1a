"""Blob stores: local disk or S3/MinIO, chosen by settings, with an optional cold tier."""

from __future__ import annotations

from pathlib import Path

from minio import Minio

from archive.blobstore.base import BlobInfo, BlobNotFound, BlobStore, StagedBlob
from archive.blobstore.local import LocalBlobStore
from archive.blobstore.s3 import S3BlobStore
from archive.blobstore.tiered import TieredBlobStore
from archive.config.settings import Settings

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


def open_blob_store(settings: Settings) -> BlobStore:
    hot = _hot_store(settings)
    cold = _cold_store(settings)
    return hot if cold is None else TieredBlobStore(hot, cold)


def _hot_store(settings: Settings) -> BlobStore:
    if settings.blob_backend == "local":
        return LocalBlobStore(settings.var_path / "blobs")
    assert settings.s3_endpoint  # blob_backend is "s3" only when an endpoint is set
    client = Minio(
        settings.s3_endpoint,
        access_key=settings.s3_access_key,
        secret_key=settings.s3_secret_key,
        secure=settings.s3_secure,
        region=settings.s3_region,
    )
    return S3BlobStore(client, settings.s3_bucket, settings.var_path / "spool")


def _cold_store(settings: Settings) -> BlobStore | None:
    if settings.cold_backend is None:
        return None
    if settings.cold_backend == "local":
        assert settings.cold_blob_dir is not None  # cold_backend says so
        return LocalBlobStore(Path(settings.cold_blob_dir))
    assert settings.cold_s3_endpoint  # cold_backend is "s3" only when an endpoint is set
    client = Minio(
        settings.cold_s3_endpoint,
        access_key=settings.cold_s3_access_key,
        secret_key=settings.cold_s3_secret_key,
        secure=settings.cold_s3_secure,
        region=settings.cold_s3_region,
    )
    return S3BlobStore(client, settings.cold_s3_bucket, settings.var_path / "spool-cold")
