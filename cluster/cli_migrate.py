"""`dicomflow migrate --from AE --since DATE [--until DATE] [--modality MOD ...]`: pull a legacy
archive's studies over DIMSE Q/R (workflows/migration.py), following its progress until it ends;
`dicomflow migrate status` shows every migration's counts and rate, `dicomflow migrate stop` stops
one (running the same command again resumes it)."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from datetime import date, datetime

from psycopg_pool import AsyncConnectionPool
from temporalio.client import Client, WorkflowFailureError

from archive.config.settings import Settings
from archive.index import migration_progress as progress
from archive.index.migration_progress import MigrationSummary
from archive.index.pool import open_index_pool
from archive.migration.source_check import migration_tenant, source_refusal
from contract import names
from contract.payloads import MigrationRequest
from contract.starts import start_migration

FOLLOW_EVERY = 2.0  # seconds between looks at the progress
QUIET_EVERY = 30.0  # seconds between progress lines when nothing changed (or the output is not a terminal)


def add_parser(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    migrate = sub.add_parser("migrate", help="pull a legacy archive's studies over C-FIND/C-MOVE, resumable")
    migrate.add_argument("action", nargs="?", choices=("start", "status", "stop"), default="start")
    migrate.add_argument("--from", dest="source", help="the legacy archive's AE title (an ae_table entry)")
    migrate.add_argument("--since", type=_day, help="first study date (YYYYMMDD or YYYY-MM-DD)")
    migrate.add_argument("--until", type=_day, help="last study date (default: today)")
    migrate.add_argument("--modality", action="append", default=[], help="only studies with this modality (repeatable)")
    migrate.add_argument("--concurrency", type=int, help="C-MOVEs to the source at once (default: migrate_concurrency)")
    migrate.add_argument("--find-limit", type=int, default=0, help="the most answers the source gives one C-FIND, if known")
    migrate.add_argument("--detach", action="store_true", help="start it and return; `dicomflow migrate status` follows it")
    migrate.add_argument("--json", action="store_true", help="status: as JSON")


def _day(text: str) -> str:
    try:
        return datetime.strptime(text.replace("-", ""), "%Y%m%d").strftime("%Y%m%d")
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date (YYYYMMDD or YYYY-MM-DD)") from None


def _request(settings: Settings, args: argparse.Namespace) -> MigrationRequest | str:
    """The migration the arguments name, or why there is none."""
    if not args.source:
        return "name the legacy archive: --from AE_TITLE (an ae_table entry)"
    refusal = source_refusal(settings.dimse, args.source)
    if refusal:
        return f"cannot migrate from {args.source}: {refusal}"
    if not args.since:
        return "name the first study date: --since YYYYMMDD (the source's oldest study, or where to begin)"
    until = args.until or date.today().strftime("%Y%m%d")
    if args.since > until:
        return f"--since {args.since} is after --until {until}"
    tenant = migration_tenant(settings, args.source)
    modalities = sorted({m.upper() for m in args.modality})
    key = names.migration_key(tenant, args.source, args.since, until, modalities)
    concurrency = args.concurrency or settings.migration.concurrency
    return MigrationRequest(key, tenant, args.source, args.since, until, modalities, concurrency, args.find_limit)


def cmd_migrate(settings: Settings, args: argparse.Namespace) -> int:
    if args.action == "status":
        return asyncio.run(_status(settings, args))
    request = _request(settings, args)
    if isinstance(request, str):
        print(f"dicomflow migrate: {request}", file=sys.stderr)
        return 2
    if args.action == "stop":
        return asyncio.run(_stop(settings, request))
    return asyncio.run(_start(settings, request, args.detach))


async def _client(settings: Settings) -> Client:
    return await Client.connect(settings.effective_temporal_address(), namespace=settings.temporal.namespace)


async def _start(settings: Settings, request: MigrationRequest, detach: bool) -> int:
    client = await _client(settings)
    workflow_id = names.migration_workflow_id(request.key)
    started = await start_migration(client, settings.temporal.task_queue, request)
    print(
        f"dicomflow migrate: {'started' if started else 'already running:'} {workflow_id} "
        f"({request.concurrency} C-MOVE(s) at once, newest day first; tenant {request.tenant!r})",
        flush=True,
    )
    if detach:
        print("  `dicomflow migrate status` shows its progress; the Temporal UI shows it as", workflow_id)
        return 0
    return await _follow(settings, client, workflow_id, request.key)


async def _follow(settings: Settings, client: Client, workflow_id: str, key: str) -> int:
    """Progress lines until the migration ends; Ctrl-C leaves it running."""
    pool = await open_index_pool(settings.effective_postgres_dsn(), max_size=1)
    result = asyncio.ensure_future(client.get_workflow_handle(workflow_id).result())
    shown, last = "", 0.0
    try:
        while not result.done():
            await asyncio.wait([result], timeout=FOLLOW_EVERY)
            line = "  ".join(_progress_line(s) for s in await progress.summaries(pool, key))
            now = time.monotonic()
            if (line != shown and (sys.stdout.isatty() or now - last >= QUIET_EVERY / 3)) or now - last >= QUIET_EVERY:
                print("  " + line, flush=True)
                shown, last = line, now
        try:
            result.result()
        except WorkflowFailureError as err:
            print(f"dicomflow migrate: {workflow_id} failed: {err.cause or err}", file=sys.stderr)
            return 1
        return await _report(pool, key)
    except (KeyboardInterrupt, asyncio.CancelledError):
        print(f"\ndicomflow migrate: {workflow_id} goes on in the background; `dicomflow migrate status` follows it")
        return 130
    finally:
        result.cancel()
        await pool.close()


async def _report(pool: AsyncConnectionPool, key: str) -> int:
    summaries = await progress.summaries(pool, key)
    for summary in summaries:
        print(f"dicomflow migrate: {summary.state}: " + _progress_line(summary))
    failed = await progress.failures(pool, key)
    for study, reason in failed:
        print(f"  failed {study}: {reason}")
    capped = await progress.capped_days(pool, key)
    if capped:
        print(
            f"  the source capped its C-FIND answers on {', '.join(capped)} even hour by hour: some studies of those days may be missing"
        )
    if failed:
        print("  run the same command again to retry the failed studies (verified ones are not pulled again)")
    return 1 if failed or capped else 0


def _progress_line(s: MigrationSummary) -> str:
    return (
        f"{s.source_ae} {s.since}-{s.until} -> {s.tenant}: {s.days} day(s) searched, studies found {s.found}, "
        f"moved {s.moved}, verified {s.verified}, failed {s.failed}; {s.instances} instances; "
        f"{s.studies_per_second:.2f} studies/s, {s.instances_per_second:.1f} instances/s"
    )


async def _status(settings: Settings, args: argparse.Namespace) -> int:
    pool = await open_index_pool(settings.effective_postgres_dsn(), max_size=1)
    try:
        summaries = [s for s in await progress.summaries(pool) if not args.source or s.source_ae == args.source]
        if args.json:
            print(json.dumps([_as_json(s) for s in summaries], indent=2))
            return 0
        if not summaries:
            print("dicomflow migrate: no migrations yet (`dicomflow migrate --from AE --since DATE` starts one)")
        for s in summaries:
            print(f"{names.migration_workflow_id(s.key)}  [{s.state}]")
            print("  " + _progress_line(s) + (f"; {s.capped_days} capped day(s)" if s.capped_days else ""))
            for study, reason in await progress.failures(pool, s.key, 5):
                print(f"    failed {study}: {reason}")
        return 0
    finally:
        await pool.close()


def _as_json(s: MigrationSummary) -> dict[str, object]:
    return {
        "workflow_id": names.migration_workflow_id(s.key),
        "tenant": s.tenant,
        "source": s.source_ae,
        "since": s.since,
        "until": s.until,
        "state": s.state,
        "days_searched": s.days,
        "capped_days": s.capped_days,
        "found": s.found,
        "moved": s.moved,
        "verified": s.verified,
        "failed": s.failed,
        "instances": s.instances,
        "studies_per_second": round(s.studies_per_second, 3),
        "instances_per_second": round(s.instances_per_second, 2),
    }


async def _stop(settings: Settings, request: MigrationRequest) -> int:
    """Cancel the migration's workflow (its children and moves with it); the same command resumes it."""
    client = await _client(settings)
    workflow_id = names.migration_workflow_id(request.key)
    try:
        await client.get_workflow_handle(workflow_id).cancel()
    except Exception as err:  # noqa: BLE001 - not running, or no such migration: say so
        print(f"dicomflow migrate: {workflow_id} could not be stopped: {err}", file=sys.stderr)
        return 1
    pool = await open_index_pool(settings.effective_postgres_dsn(), max_size=1)
    try:
        await progress.set_state(pool, request.key, "stopped")
    finally:
        await pool.close()
    print(f"dicomflow migrate: {workflow_id} stopped; run the same `dicomflow migrate` command to resume it")
    return 0
