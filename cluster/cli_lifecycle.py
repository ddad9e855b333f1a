"""`dicomflow lifecycle run [--as-of DATE] [--dry-run]`: the lifecycle rules applied now (the run the
Schedule starts daily), printing what it would do or did; `dicomflow hold STUDY_UID` keeps a study
from any deletion (`--release` lets it go, `--list` shows every hold)."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import uuid
from datetime import datetime, timezone

from temporalio.client import Client

from archive.config.settings import Settings
from archive.index import holds
from archive.index.pool import open_index_pool
from contract import names
from contract.payloads import LifecycleResult, LifecycleRun


def add_parsers(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    lifecycle = sub.add_parser(
        "lifecycle", help="storage lifecycle rules: compress, tier to the cold store, delete after retention"
    )
    verbs = lifecycle.add_subparsers(dest="lifecycle_command", required=True)
    run = verbs.add_parser("run", help="apply the rules now; with --dry-run list what they would do")
    run.add_argument("--as-of", type=datetime.fromisoformat, help="judge ages as if it were this time (ISO 8601)")
    run.add_argument("--dry-run", action="store_true", help="list what would be done, do nothing")
    hold = sub.add_parser("hold", help="keep a study from deletion by any lifecycle rule (legal or clinical hold)")
    hold.add_argument("study", nargs="?", help="a StudyInstanceUID")
    hold.add_argument("--tenant", help="the study's tenant (default: default_tenant)")
    hold.add_argument("--reason", default="hold", help="why (kept with the hold)")
    hold.add_argument("--release", action="store_true", help="end the hold")
    hold.add_argument("--list", action="store_true", help="list every hold")


async def _run(settings: Settings, as_of: datetime | None, dry_run: bool) -> int:
    client = await Client.connect(settings.effective_temporal_address(), namespace=settings.temporal.namespace)
    when = (as_of or datetime.now(timezone.utc)).isoformat()
    if not settings.lifecycle.rules:
        print("lifecycle: no lifecycle_rules in the settings; nothing to do")
        return 0
    result = await client.execute_workflow(
        names.LIFECYCLE_RUN_WORKFLOW,
        LifecycleRun(when, dry_run, settings.lifecycle.concurrency),
        id=f"{names.LIFECYCLE_SCHEDULE}-cli-{uuid.uuid4().hex[:12]}",
        task_queue=settings.temporal.task_queue,
        result_type=LifecycleResult,
    )
    verb = "would work on" if dry_run else "worked on"
    for line in result.planned:
        print(f"  {line}")
    print(f"lifecycle: as of {when}, {verb} {result.studies if dry_run else len(result.planned)} study(ies)")
    if not dry_run:
        saved = result.bytes_before - result.bytes_after
        print(
            f"lifecycle: {result.compressed} object(s) compressed ({result.bytes_before} -> {result.bytes_after} bytes,"
            f" {saved} saved), {result.skipped} left as they were, {result.deleted} deleted,"
            f" {result.tiered} moved to the cold store ({result.bytes_tiered} bytes)"
        )
    return 0


async def _hold(settings: Settings, args: argparse.Namespace) -> int:
    pool = await open_index_pool(settings.effective_postgres_dsn(), max_size=1)
    tenant = args.tenant or settings.default_tenant
    try:
        if args.list:
            for t, study, reason, by, since in await holds.holds(pool, args.tenant):
                print(f"{t}  {study}  held since {since:%Y-%m-%d %H:%M} by {by}: {reason}")
            return 0
        if not args.study:
            print("hold: name a StudyInstanceUID (or --list)")
            return 2
        if args.release:
            released = await holds.release(pool, tenant, args.study)
            print(f"hold: {'released' if released else 'no hold on'} {args.study} in {tenant!r}")
            return 0 if released else 1
        added = await holds.hold(pool, tenant, args.study, args.reason, getpass.getuser())
        print(f"hold: {args.study} in {tenant!r} {'is now on hold' if added else 'was already on hold'}")
        return 0
    finally:
        await pool.close()


def cmd_lifecycle(settings: Settings, args: argparse.Namespace) -> int:
    return asyncio.run(_run(settings, args.as_of, args.dry_run))


def cmd_hold(settings: Settings, args: argparse.Namespace) -> int:
    return asyncio.run(_hold(settings, args))
