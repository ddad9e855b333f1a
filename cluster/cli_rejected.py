"""`dicomflow rejected`: what IOCM rejection notes withdrew (list), `restore STUDY [SOP ...]` within
the grace period, and `expire [--as-of DATE]`, a rejection expiry run now (the workflow the Schedule
starts), printing what it deleted."""

from __future__ import annotations

import argparse
import asyncio
import uuid
from datetime import datetime, timedelta, timezone

from temporalio.client import Client

from archive.config.settings import Settings
from archive.dicom.rejection_note import REJECTION_CODES, RETENTION_EXPIRED
from archive.index.pool import open_index_pool
from archive.index.rejections import list_rejected, restore
from contract import names
from contract.payloads import ExpiryOutcome, ExpiryRequest


def add_parser(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    rejected = sub.add_parser("rejected", help="instances withdrawn by IOCM rejection notes: list, restore, expire")
    rejected.add_argument("--tenant", help="only this tenant")
    rejected.add_argument("--study", help="only this StudyInstanceUID")
    verbs = rejected.add_subparsers(dest="rejected_command")
    again = verbs.add_parser("restore", help="revoke the rejection of a study's instances (all, or those named)")
    again.add_argument("study", help="a StudyInstanceUID")
    again.add_argument("instances", nargs="*", help="SOP Instance UIDs (default: every rejected instance of the study)")
    expire = verbs.add_parser("expire", help="delete what is due now, as the scheduled expiry would")
    expire.add_argument("--as-of", type=datetime.fromisoformat, help="judge what is due as if it were this time (ISO 8601)")


async def _list(settings: Settings, tenant: str | None, study: str | None) -> int:
    pool = await open_index_pool(settings.effective_postgres_dsn(), max_size=1)
    try:
        rows = await list_rejected(pool, [tenant] if tenant else None, study)
    finally:
        await pool.close()
    for tenant_name, r in rows:
        grace = timedelta(0 if r.code == RETENTION_EXPIRED else settings.lifecycle.rejected_retention_days)
        fate = (
            f"deleted {r.deleted_at:%Y-%m-%d %H:%M}"
            if r.deleted_at
            else f"restorable until {r.rejected_at + grace:%Y-%m-%d %H:%M}"
        )
        print(f"{tenant_name}  {r.study_uid}  {r.sop_uid}  {r.code} {REJECTION_CODES.get(r.code, '')}  {fate}")
    print(f"rejected: {len(rows)} instance(s)")
    return 0


async def _restore(settings: Settings, tenant: str, study: str, instances: list[str]) -> int:
    pool = await open_index_pool(settings.effective_postgres_dsn(), max_size=1)
    try:
        restored = await restore(pool, tenant, study, instances or None)
    finally:
        await pool.close()
    if not restored:
        print(f"rejected: nothing to restore in study {study} of tenant {tenant!r} (restored, expired or never rejected)")
        return 1
    print(f"rejected: restored {len(restored)} instance(s); the study's workflow takes them up within seconds")
    return 0


async def _expire(settings: Settings, as_of: datetime | None) -> int:
    client = await Client.connect(settings.effective_temporal_address(), namespace=settings.temporal.namespace)
    when = (as_of or datetime.now(timezone.utc)).isoformat()
    outcome = await client.execute_workflow(
        names.REJECTION_EXPIRY_WORKFLOW,
        ExpiryRequest(when),
        id=f"{names.REJECTION_EXPIRY_SCHEDULE}-cli-{uuid.uuid4().hex[:12]}",
        task_queue=settings.temporal.task_queue,
        result_type=ExpiryOutcome,
    )
    print(f"rejected: as of {when}, deleted {outcome.instances} instance(s) in {outcome.studies} study(ies)")
    return 0


def cmd_rejected(settings: Settings, args: argparse.Namespace) -> int:
    if args.rejected_command == "restore":
        return asyncio.run(_restore(settings, args.tenant or settings.default_tenant, args.study, args.instances))
    if args.rejected_command == "expire":
        return asyncio.run(_expire(settings, args.as_of))
    return asyncio.run(_list(settings, args.tenant, args.study))
