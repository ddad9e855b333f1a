"""Sending over C-STORE: one association per worker, proposing each file's own SOP class and
transfer syntax; a lost association is opened again and what was not acknowledged is resent."""

from __future__ import annotations

import ssl
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from pynetdicom import AE
from pynetdicom.association import Association

import dimse
from cluster.sender.outcome import WARNINGS, Tally
from cluster.sender.sources import DicomFile
from dimse.store_scu import no_delay, release

MAX_CONTEXTS = 128
ATTEMPTS = 3


@dataclass(frozen=True)
class DimseTarget:
    host: str
    port: int
    called_ae: str
    calling_ae: str
    tls: ssl.SSLContext | None = None


def _groups(files: list[DicomFile]) -> list[list[DicomFile]]:
    """Files in groups whose (SOP class, transfer syntax) pairs fit one association's contexts."""
    groups: list[list[DicomFile]] = []
    pairs: list[set[tuple[str, str]]] = []
    for item in sorted(files, key=lambda f: (f.sop_class_uid, f.transfer_syntax)):
        pair = (item.sop_class_uid, item.transfer_syntax)
        if not groups or (pair not in pairs[-1] and len(pairs[-1]) >= MAX_CONTEXTS):
            groups.append([])
            pairs.append(set())
        groups[-1].append(item)
        pairs[-1].add(pair)
    return groups


def _associate(target: DimseTarget, files: list[DicomFile]) -> Association:
    ae = AE(ae_title=target.calling_ae)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 60
    for sop_class, syntax in sorted({(f.sop_class_uid, f.transfer_syntax) for f in files}):
        ae.add_requested_context(sop_class, [syntax])
    tls = (target.tls, target.host) if target.tls else None
    assoc = ae.associate(target.host, target.port, ae_title=target.called_ae, tls_args=tls)
    if not assoc.is_established:
        raise ConnectionError(f"{target.called_ae} at {target.host}:{target.port} did not accept the association")
    no_delay(assoc)
    return assoc


def _send_group(target: DimseTarget, files: list[DicomFile], tally: Tally, advance: Callable[[int], None]) -> None:
    owed, attempt = list(files), 0
    while owed and attempt < ATTEMPTS:
        attempt += 1
        try:
            assoc = _associate(target, owed)
        except ConnectionError as err:
            last_error = str(err)
            continue
        try:
            while owed:
                item = owed[0]
                try:
                    response = assoc.send_c_store(str(item.path))
                except Exception as err:  # noqa: BLE001 - this file cannot be sent (unreadable, no context): the next can
                    owed.pop(0)
                    tally.rejected(str(item.path), f"cannot send: {str(err)[:120]}")
                    advance(item.size)
                    continue
                if not response or "Status" not in response:
                    last_error = "the association was lost"
                    break  # not acknowledged: open a new association and send it again
                owed.pop(0)
                _record(tally, item, int(response.Status), str(response.get("ErrorComment", "") or ""))
                advance(item.size)
        finally:
            if assoc.is_established:
                release(assoc)
    for item in owed:
        tally.rejected(str(item.path), f"not sent after {ATTEMPTS} attempts: {last_error}")
        advance(item.size)


def _record(tally: Tally, item: DicomFile, status: int, comment: str) -> None:
    if status == 0 or status in WARNINGS:
        tally.accepted(item.sop_instance_uid, warning=status != 0)
    else:
        tally.rejected(str(item.path), f"status 0x{status:04X}" + (f": {comment}" if comment else ""))


def send_dimse(target: DimseTarget, files: list[DicomFile], jobs: int, tally: Tally, advance: Callable[[int], None]) -> None:
    dimse.install()  # files go out as their bytes (chunked), through the reactor the worker's sends use
    shares: list[list[DicomFile]] = [[] for _ in range(max(1, jobs))]
    for index, item in enumerate(files):
        shares[index % len(shares)].append(item)
    with ThreadPoolExecutor(max_workers=len(shares)) as pool:
        futures = [
            pool.submit(_send_group, target, group, tally, advance) for share in shares if share for group in _groups(share)
        ]
        for future in futures:
            future.result()
