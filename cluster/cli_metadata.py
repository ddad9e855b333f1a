"""`dicomflow metadata regenerate`: have the study workflows rewrite series documents that an older
archive wrote in another JSON format (archive.dicom.dicom_json.DOCUMENT_FORMAT).

WADO-RS already answers such series correctly, by building their metadata from the stored files
on each uncached read; regenerating makes them fast again. Each study's own workflow writes its
documents (the one writer, as after a store or a delete), so this only signals them, with progress.
"""

from __future__ import annotations

import argparse
import asyncio
import sys

import psycopg
from psycopg_pool import PoolTimeout
from temporalio.client import Client

from archive.config.settings import Settings
from archive.dicom.dicom_json import DOCUMENT_FORMAT
from archive.index import lifecycle
from archive.index.pool import open_index_pool
from contract import names
from contract.starts import signal_study


def add_parser(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    parser = sub.add_parser("metadata", help="WADO-RS series metadata documents")
    actions = parser.add_subparsers(dest="metadata_command", required=True)
    regen = actions.add_parser("regenerate", help=f"rewrite the documents not in the current format ({DOCUMENT_FORMAT})")
    regen.add_argument("--tenant", default=None, help="only this tenant's studies (default: every tenant)")
    regen.add_argument("--dry-run", action="store_true", help="list the studies, signal nothing")


async def _stale(settings: Settings, tenant: str | None) -> list[tuple[str, str]]:
    pool = await open_index_pool(settings.effective_postgres_dsn(), max_size=1)
    try:
        return await lifecycle.studies_with_stale_documents(pool, tenant)
    finally:
        await pool.close()


async def _signal(settings: Settings, studies: list[tuple[str, str]]) -> None:
    client = await Client.connect(settings.effective_temporal_address(), namespace=settings.temporal.namespace)
    for done, (tenant, study_uid) in enumerate(studies, start=1):
        # no instance arrived: the workflow's new run re-indexes and rewrites every series document
        await signal_study(client, settings.temporal.task_queue, tenant, study_uid, 0, None, settings.ingest.stable_seconds)
        if done % 100 == 0 or done == len(studies):
            print(f"metadata: {done}/{len(studies)} study workflows signalled", flush=True)


def cmd_metadata(settings: Settings, args: argparse.Namespace) -> int:
    try:
        studies = asyncio.run(_stale(settings, args.tenant))
    except (OSError, psycopg.Error, PoolTimeout) as err:
        print(f"dicomflow metadata: cannot reach the index ({err}); is the archive up (`dicomflow status`)?", file=sys.stderr)
        return 1
    scope = f"tenant {args.tenant!r}" if args.tenant else "every tenant"
    print(
        f"metadata: {len(studies)} studies of {scope} hold documents in another format than the current {DOCUMENT_FORMAT}",
        flush=True,
    )
    if args.dry_run:
        for tenant, study_uid in studies:
            print(f"  {tenant} {study_uid}")
        return 0
    try:
        asyncio.run(_signal(settings, studies))
    except RuntimeError as err:  # temporalio's connection errors
        print(f"dicomflow metadata: cannot reach Temporal ({err}); is the archive up (`dicomflow status`)?", file=sys.stderr)
        return 1
    if studies:
        print(
            f"metadata: their workflows rewrite the documents now; follow them in the Temporal UI "
            f"(WorkflowType = '{names.STUDY_WORKFLOW}')"
        )
    return 0
