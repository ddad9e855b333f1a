"""Removing blobs after the rows that named them are gone: best effort, because the deletion already
stands (its transaction committed) and a blob that will not go now is an orphan the sweeper
(archive/services/sweeper.py) removes later."""

from __future__ import annotations

import logging

from archive.blobstore.base import BlobStore

log = logging.getLogger("dicomflow.blobs")


def remove_blobs(blobs: BlobStore, keys: list[str], what: str) -> list[str]:
    """Delete `keys` (blobs of `what`, for the log); the keys that went (or were gone already)."""
    removed = []
    for key in keys:
        try:
            blobs.delete(key)
            removed.append(key)
        except Exception:  # noqa: BLE001 - see the module docstring
            log.warning("could not remove blob %s of %s; the orphan sweeper will", key, what, exc_info=True)
    return removed
