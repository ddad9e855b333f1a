"""Blob stores: local disk or S3/MinIO, chosen by settings."""

from __future__ import annotations

from minio import Minio

from archive.blobstore.base import BlobInfo, BlobNotFound, BlobStore, StagedBlob
from archive.blobstore.local import LocalBlobStore
from archive.blobstore.s3 import S3BlobStore
from archive.config.settings import Settings

__all__ = ["BlobInfo", "BlobNotFound", "BlobStore", "StagedBlob", "LocalBlobStore", "S3BlobStore", "open_blob_store"]


def open_blob_store(settings: Settings) -> BlobStore:
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
