"""Verify a stored instance: the blob is there and its size and SHA-256 match the row.

Receipt parsed and checked exactly these bytes before it recorded their hash, so a matching hash
carries receipt's verdict over; the header is parsed again only for rows without a hash."""

from __future__ import annotations

from archive.blobstore import BlobNotFound, BlobStore
from archive.blobstore.base import hash_file
from archive.dicom.header import InvalidObject, read_header


def verify_blob(blobs: BlobStore, key: str, size: int, sha256: str) -> str | None:
    """None when the object is sound, else the reason it is not."""
    try:
        actual_size = blobs.size(key)
    except BlobNotFound:
        return f"blob {key} is missing"
    if actual_size != size:
        return f"blob {key} has {actual_size} bytes, the index recorded {size}"
    with blobs.local_copy(key) as path:
        if sha256:
            return None if hash_file(path)[1] == sha256 else f"blob {key} does not match its SHA-256 (corrupted after receipt)"
        try:
            read_header(path)
        except InvalidObject as err:
            return str(err)
    return None
