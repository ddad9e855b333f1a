"""The orphan sweeper: blobs that no index row names, older than a grace period, are removed.

Orphans are what a crash leaves between a blob's write and its row's commit (a receipt that never
answered Success), the superseded blobs a replace, repair or DELETE committed away but could not
remove, and the documents of series deleted meanwhile. A receipt writes its blob before its row
commits, so only blobs older than the grace period are judged. A key is written once and never
again (archive/blobstore/layout.py), so an old key no row names will never be named later: removing it is
safe. Each blob is looked at again just before it goes, in case it was rewritten meanwhile.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from psycopg_pool import AsyncConnectionPool

from archive.blobstore import BlobInfo, BlobNotFound, BlobStore
from archive.config.sections import IngestSettings
from archive.index.orphans import sweeper_turn, unreferenced

log = logging.getLogger("dicomflow.sweeper")
BATCH = 1000  # keys asked of the index at once


@dataclass
class SweepReport:
    dry_run: bool
    scanned: int = 0
    young: int = 0  # within the grace period: not judged
    removed: int = 0  # with dry_run: would be removed
    removed_bytes: int = 0
    failed: int = 0
    removed_keys: list[str] = field(default_factory=list)

    def summary(self) -> str:
        verb = "would remove" if self.dry_run else "removed"
        return (
            f"{self.scanned} blobs scanned, {self.young} within the grace period; {verb} {self.removed} orphans "
            f"({self.removed_bytes} bytes)" + (f"; {self.failed} could not be removed" if self.failed else "")
        )


async def sweep(
    blobs: BlobStore,
    pool: AsyncConnectionPool,
    grace_seconds: float,
    *,
    dry_run: bool = False,
    progress: Callable[[SweepReport], None] | None = None,
) -> SweepReport:
    report = SweepReport(dry_run)
    cutoff = time.time() - grace_seconds
    listing = blobs.list_blobs()
    while batch := await asyncio.to_thread(_take, listing, BATCH):
        old = [blob for blob in batch if blob.modified < cutoff]
        report.scanned += len(batch)
        report.young += len(batch) - len(old)
        orphans = await unreferenced(pool, [blob.key for blob in old])
        for blob in old:
            if blob.key in orphans:
                await asyncio.to_thread(_remove, blobs, blob, cutoff, report)
        if progress is not None:
            progress(report)
    log.info("orphan sweep of %s: %s", blobs.describe(), report.summary())
    return report


def _take(listing: Iterator[BlobInfo], count: int) -> list[BlobInfo]:
    return list(itertools.islice(listing, count))


def _remove(blobs: BlobStore, blob: BlobInfo, cutoff: float, report: SweepReport) -> None:
    try:
        now = blobs.info(blob.key)
    except BlobNotFound:
        return
    if now.modified >= cutoff:  # written again since it was listed: not ours to judge yet
        report.young += 1
        return
    try:
        if not report.dry_run:
            blobs.delete(blob.key)
    except Exception:  # noqa: BLE001 - one blob that will not go does not stop the sweep
        report.failed += 1
        log.warning("could not remove orphan blob %s", blob.key, exc_info=True)
        return
    report.removed += 1
    report.removed_bytes += now.size
    report.removed_keys.append(blob.key)
    log.info("%s orphan blob %s (%d bytes)", "would remove" if report.dry_run else "removed", blob.key, now.size)


async def sweep_once(
    blobs: BlobStore,
    pool: AsyncConnectionPool,
    grace_seconds: float,
    *,
    dry_run: bool = False,
    progress: Callable[[SweepReport], None] | None = None,
) -> SweepReport | None:
    """A sweep, unless another process is sweeping right now (None then)."""
    async with sweeper_turn(pool) as mine:
        if not mine:
            return None
        return await sweep(blobs, pool, grace_seconds, dry_run=dry_run, progress=progress)


async def sweep_forever(blobs: BlobStore, pool: AsyncConnectionPool, ingest: IngestSettings) -> None:
    """Every sweep_interval_seconds, in whichever worker process gets the turn."""
    if not ingest.sweep_interval_seconds:
        return
    while True:
        await asyncio.sleep(ingest.sweep_interval_seconds)
        try:
            await sweep_once(blobs, pool, ingest.orphan_grace_seconds)
        except Exception:  # noqa: BLE001 - try again next interval
            log.warning("orphan sweep failed", exc_info=True)
