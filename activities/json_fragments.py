"""Each stored object's DICOM JSON, converted once per worker process.

A series document holds every committed instance of the series, and a study whose instances arrive
in several bursts is processed in several passes, each of which rewrote the whole document: every
instance re-read from the blob store and re-parsed each pass (O(series x passes); the profile's
worker cost per instance was 11.2 ms with one association against 7.0 with four for the same files,
bench/results/2026-12-07-ingest-profile.md). A blob key names bytes that are never written over
(archive/blobstore/layout.py), so its JSON never changes: the text is kept here, bounded by bytes,
least recently used out first. A miss (another worker, a restart) only costs the conversion again.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

DEFAULT_MAX_BYTES = 64 * 2**20


class JsonFragments:
    def __init__(self, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self.max_bytes = max_bytes
        self.size = 0
        self._texts: OrderedDict[str, str] = OrderedDict()
        self._lock = threading.Lock()  # series documents are written on several background threads

    def get(self, blob_key: str) -> str | None:
        with self._lock:
            text = self._texts.get(blob_key)
            if text is not None:
                self._texts.move_to_end(blob_key)
            return text

    def put(self, blob_key: str, text: str) -> None:
        if len(text) > self.max_bytes:
            return
        with self._lock:
            old = self._texts.pop(blob_key, None)
            self.size += len(text) - (len(old) if old is not None else 0)
            self._texts[blob_key] = text
            while self.size > self.max_bytes:
                _, evicted = self._texts.popitem(last=False)
                self.size -= len(evicted)
