"""`dicomflow send PATH...`: send folders and zip files of DICOM to an archive (this one or any
other) over C-STORE or STOW-RS, with progress, retries, a summary and a journal for resuming."""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

from archive.config.settings import Settings
from archive.config.tls import ssl_client_context
from cluster.sender.dimse import DimseTarget, send_dimse
from cluster.sender.journal import default_journal, remember, sent_before
from cluster.sender.outcome import Tally
from cluster.sender.progress import Progress
from cluster.sender.sources import find_dicom
from cluster.sender.stow import StowTarget, send_stow


def add_parser(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    send = sub.add_parser("send", help="send folders / zip files of DICOM over C-STORE or STOW-RS, with progress")
    send.add_argument("paths", nargs="+", type=Path)
    send.add_argument("--to", choices=["dimse", "stow"], default="dimse")
    send.add_argument("--host", help="DIMSE host (default: this archive's bind_host)")
    send.add_argument("--port", type=int, help="DIMSE port (default: this archive's dimse_port)")
    send.add_argument("--aec", help="the archive's AE title (default: this archive's)")
    send.add_argument("--aet", default="DFSEND", help="our calling AE title (must be in the archive's AE table)")
    send.add_argument("--tls", action="store_true", help="DICOM TLS with this archive's CA (tls_ca_file)")
    send.add_argument("--url", help="DICOMweb root for --to stow (default: this archive's /dicomweb)")
    send.add_argument("--tenant", help="STOW-RS: the x-tenant header")
    send.add_argument("--token", default=os.environ.get("DICOMFLOW_TOKEN"), help="STOW-RS bearer token (or DICOMFLOW_TOKEN)")
    send.add_argument("--jobs", type=int, default=2, help="parallel associations (DIMSE)")
    send.add_argument("--journal", type=Path, help="what was already sent (default: one per target in ~/.cache)")
    send.add_argument("--resend", action="store_true", help="ignore the journal and send everything")


def _dimse_target(settings: Settings, args: argparse.Namespace) -> DimseTarget:
    if args.tls and settings.tls.ca_file is None:
        raise SystemExit("dicomflow send: --tls needs tls_ca_file in the settings (the CA that signed the archive)")
    tls = ssl_client_context(settings.tls.ca_file) if args.tls and settings.tls.ca_file else None
    port = args.port or (settings.dimse.tls_port if args.tls else settings.dimse.port)
    return DimseTarget(args.host or settings.bind_host, port, args.aec or settings.dimse.ae_title, args.aet, tls)


def _stow_target(settings: Settings, args: argparse.Namespace) -> StowTarget:
    headers = {"x-tenant": args.tenant} if args.tenant else {}
    if args.token:
        headers["Authorization"] = f"Bearer {args.token}"
    return StowTarget(args.url or f"{settings.dicomweb_origin}/dicomweb", headers)


def _target_name(dimse: DimseTarget | None, stow: StowTarget | None, tenant: str | None) -> str:
    if dimse is not None:
        return f"dimse://{dimse.called_ae}@{dimse.host}:{dimse.port}"
    assert stow is not None
    return f"{stow.url}#{tenant or ''}"


def _summary(tally: Tally, skipped: list[tuple[str, str]], already: int) -> None:
    print(
        f"dicomflow send: {tally.stored} stored ({tally.warned} with warnings), {len(tally.refused)} refused, "
        f"{already} sent before (journal), {len(skipped)} not DICOM"
    )
    for reason, count in tally.reasons():
        print(f"  refused {count}x: {reason}")
    for path, reason in tally.refused[:20]:
        print(f"    {path}: {reason}")
    for path, reason in skipped[:10]:
        print(f"  skipped {path}: {reason}")


def cmd_send(settings: Settings, args: argparse.Namespace) -> int:
    missing = [str(p) for p in args.paths if not p.exists()]
    if missing:
        print(f"dicomflow send: no such file or folder: {', '.join(missing)}", file=sys.stderr)
        return 2
    dimse = _dimse_target(settings, args) if args.to == "dimse" else None
    stow = _stow_target(settings, args) if args.to == "stow" else None
    name = _target_name(dimse, stow, args.tenant)
    journal = args.journal or default_journal(name)
    with tempfile.TemporaryDirectory(prefix="dicomflow-send-") as unpack:
        found = find_dicom(args.paths, Path(unpack))
        before = set() if args.resend else sent_before(journal)
        files = [f for f in found.files if f.sop_instance_uid not in before]
        print(
            f"dicomflow send: {len(files)} DICOM files to {name} ({len(found.files) - len(files)} sent before)", file=sys.stderr
        )
        tally = Tally()
        progress = Progress(len(files), sum(f.size for f in files))
        if dimse:
            send_dimse(dimse, files, args.jobs, tally, progress.advance)
        elif stow:
            send_stow(stow, files, tally, progress.advance)
    remember(journal, tally.stored_uids)
    _summary(tally, found.skipped, len(found.files) - len(files))
    return 1 if tally.refused else 0
