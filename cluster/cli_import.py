"""`dicomflow import DIR...`: a disk dump of a legacy archive (folders, zip files) into this archive
through its own C-STORE receipt, on several associations at once (`dicomflow send`'s sender), with
progress. Resumable: a file whose SOP Instance UID the index already holds in the tenant is not
sent again, so a re-run after a crash or a Ctrl-C sends only the rest."""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
from pathlib import Path

from archive.config.settings import Settings
from archive.config.tls import ssl_client_context
from archive.index.pool import open_index_pool
from cluster.sender.dimse import DimseTarget, send_dimse
from cluster.sender.outcome import Tally
from cluster.sender.progress import Progress
from cluster.sender.sources import DicomFile, find_dicom

LOOKUP_CHUNK = 5_000  # SOP Instance UIDs looked up in the index per statement


def add_parser(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    imp = sub.add_parser("import", help="import a disk dump of DICOM (folders, zips) through C-STORE receipt; resumable")
    imp.add_argument("paths", nargs="+", type=Path)
    imp.add_argument("--aet", default="DFIMPORT", help="calling AE title: its ae_table entry decides the tenant")
    imp.add_argument("--jobs", type=int, help="parallel associations (default: 2 per SCP process)")
    imp.add_argument("--tls", action="store_true", help="over DICOM TLS (needs tls_ca_file)")


async def _already_stored(settings: Settings, tenant: str, files: list[DicomFile]) -> set[str]:
    """The SOP Instance UIDs among `files` the index holds in `tenant` (in any state: the archive has them)."""
    uids = [f.sop_instance_uid for f in files]
    pool = await open_index_pool(settings.effective_postgres_dsn(), max_size=1)
    held: set[str] = set()
    try:
        async with pool.connection() as conn:
            for start in range(0, len(uids), LOOKUP_CHUNK):
                rows = await (
                    await conn.execute(
                        "SELECT sop_uid FROM instance WHERE tenant = %s AND sop_uid = ANY(%s)",
                        (tenant, uids[start : start + LOOKUP_CHUNK]),
                    )
                ).fetchall()
                held.update(r[0] for r in rows)
    finally:
        await pool.close()
    return held


def _target(settings: Settings, args: argparse.Namespace) -> DimseTarget:
    if args.tls and settings.tls.ca_file is None:
        raise SystemExit("dicomflow import: --tls needs tls_ca_file in the settings")
    tls = ssl_client_context(settings.tls.ca_file) if args.tls and settings.tls.ca_file else None
    host = "127.0.0.1" if settings.bind_host in ("0.0.0.0", "::") else settings.bind_host
    port = settings.dimse.tls_port if args.tls else settings.dimse.port
    return DimseTarget(host, port, settings.dimse.ae_title, args.aet, tls)


def cmd_import(settings: Settings, args: argparse.Namespace) -> int:
    missing = [str(p) for p in args.paths if not p.exists()]
    if missing:
        print(f"dicomflow import: no such file or folder: {', '.join(missing)}", file=sys.stderr)
        return 2
    tenant = settings.tenant_for_ae(args.aet, settings.dimse.ae_title)
    jobs = args.jobs or max(2, 2 * settings.cluster.scp_processes)
    with tempfile.TemporaryDirectory(prefix="dicomflow-import-") as unpack:
        print(f"dicomflow import: reading the headers under {', '.join(map(str, args.paths))} ...", file=sys.stderr, flush=True)
        found = find_dicom(args.paths, Path(unpack))
        held = asyncio.run(_already_stored(settings, tenant, found.files))
        files = [f for f in found.files if f.sop_instance_uid not in held]
        print(
            f"dicomflow import: {len(files)} DICOM files to send into tenant {tenant!r} as {args.aet} "
            f"({len(found.files) - len(files)} already stored, {len(found.skipped)} not DICOM), {jobs} associations",
            file=sys.stderr,
            flush=True,
        )
        tally = Tally()
        progress = Progress(len(files), sum(f.size for f in files))
        send_dimse(_target(settings, args), files, jobs, tally, progress.advance)
    _summary(tally, len(found.files) - len(files), found.skipped, args.aet)
    return 1 if tally.refused else 0


def _summary(tally: Tally, already: int, skipped: list[tuple[str, str]], aet: str) -> None:
    print(
        f"dicomflow import: {tally.stored} stored ({tally.warned} with warnings), {len(tally.refused)} refused, "
        f"{already} already stored before, {len(skipped)} not DICOM"
    )
    for reason, count in tally.reasons():
        print(f"  refused {count}x: {reason}")
    if any("did not accept" in reason for reason, _ in tally.reasons()):
        print(f'  the archive refused the association: add {aet} to ae_table with services = ["store"] (and its tenant)')
    for path, reason in tally.refused[:20]:
        print(f"    {path}: {reason}")
    if tally.refused:
        print("  run the same command again to send what was refused or not sent (stored files are not sent twice)")
