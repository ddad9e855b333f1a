"""`dicomflow sweep`: remove blobs no index row names (archive/services/sweeper.py), with progress."""

from __future__ import annotations

import argparse
import asyncio
import sys

from archive.blobstore import open_blob_store
from archive.config.settings import Settings
from archive.index.pool import open_index_pool
from archive.services.sweeper import SweepReport, sweep_once


def _seconds(text: str) -> float:
    value = float(text)
    if value < 0:
        raise argparse.ArgumentTypeError("the grace period cannot be negative")
    return value


def add_parser(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    sweep = sub.add_parser("sweep", help="remove orphan blobs (no index row names them) older than the grace period")
    sweep.add_argument("--dry-run", action="store_true", help="list what would be removed, remove nothing")
    sweep.add_argument(
        "--grace", type=_seconds, metavar="SECONDS", help="only blobs older than this are judged (default: orphan_grace_seconds)"
    )


class _Progress:
    """One line per batch, and each orphan as it is found."""

    def __init__(self) -> None:
        self.shown = 0

    def __call__(self, report: SweepReport) -> None:
        verb = "would remove" if report.dry_run else "removed"
        for key in report.removed_keys[self.shown :]:
            print(f"  {verb} {key}", flush=True)
        self.shown = len(report.removed_keys)
        print(f"sweep: {report.scanned} scanned, {report.removed} orphans ({report.removed_bytes} bytes)", flush=True)


async def _sweep(settings: Settings, grace: float, dry_run: bool) -> SweepReport | None:
    blobs = await asyncio.to_thread(open_blob_store, settings.storage, settings.var_path)
    pool = await open_index_pool(settings.effective_postgres_dsn(), max_size=2)
    try:
        return await sweep_once(blobs, pool, grace, dry_run=dry_run, progress=_Progress())
    finally:
        await pool.close()


def cmd_sweep(settings: Settings, args: argparse.Namespace) -> int:
    grace = settings.ingest.orphan_grace_seconds if args.grace is None else args.grace
    print(
        f"sweep: {'dry run over' if args.dry_run else 'sweeping'} {settings.storage.s3_endpoint or settings.var_path / 'blobs'}, "
        f"grace {grace:g} s",
        flush=True,
    )
    report = asyncio.run(_sweep(settings, grace, args.dry_run))
    if report is None:
        print("sweep: another sweep is running; try again later", file=sys.stderr)
        return 1
    print(f"sweep: {report.summary()}")
    return 1 if report.failed else 0
