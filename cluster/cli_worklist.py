"""`dicomflow worklist import FILE...`: schedule procedure steps for the Modality Worklist when the
hospital has no RIS connection yet. Files are DICOM JSON (one item or a list) or DICOM worklist
files (as dcmtk's wlistdb holds them)."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError

from archive.config.settings import Settings
from archive.index import worklist
from archive.index.pool import open_index_pool
from archive.services.worklist import MAX_ITEM_BYTES, ItemRejected, WorklistRow, parse_items, worklist_row


def add_parser(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    parser = sub.add_parser("worklist", help="Modality Worklist: import scheduled procedure steps")
    actions = parser.add_subparsers(dest="worklist_command", required=True)
    imp = actions.add_parser("import", help="schedule the items in FILEs (DICOM JSON or DICOM worklist files)")
    imp.add_argument("files", nargs="+", type=Path)
    imp.add_argument("--tenant", default=None, help="the tenant whose modalities see them (default: default_tenant)")


def _datasets(path: Path) -> list[Dataset]:
    if path.stat().st_size > 1000 * MAX_ITEM_BYTES:
        raise ItemRejected(f"{path}: larger than {1000 * MAX_ITEM_BYTES} bytes; split it")
    if path.suffix.lower() == ".json":
        try:
            return parse_items(json.loads(path.read_text(encoding="utf-8")))
        except json.JSONDecodeError as err:
            raise ItemRejected(f"{path}: not JSON: {err}") from None
    try:
        return [dcmread(path, force=False)]
    except InvalidDicomError:
        raise ItemRejected(f"{path}: neither .json nor a DICOM file") from None


def read_rows(files: list[Path]) -> list[WorklistRow]:
    rows = []
    for path in files:
        try:
            rows += [worklist_row(ds) for ds in _datasets(path)]
        except ItemRejected as err:
            raise ItemRejected(f"{path}: {err}") from None
    return rows


async def _import(settings: Settings, tenant: str, rows: list[WorklistRow]) -> int:
    pool = await open_index_pool(settings.effective_postgres_dsn(), max_size=1)
    try:
        return await worklist.upsert(pool, tenant, rows)
    finally:
        await pool.close()


def cmd_worklist(settings: Settings, args: argparse.Namespace) -> int:
    tenant = args.tenant or settings.default_tenant
    try:
        rows = read_rows(args.files)
    except (ItemRejected, OSError) as err:
        print(f"dicomflow worklist: {err}; nothing was imported", file=sys.stderr)
        return 2
    count = asyncio.run(_import(settings, tenant, rows))
    print(f"dicomflow worklist: {count} scheduled procedure step(s) imported into tenant {tenant!r}")
    return 0
