"""A C-STORE association to another AE, proposing what a list of objects needs: each stored
transfer syntax, and the uncompressed ones every storage SCP accepts."""

from __future__ import annotations

import socket
import ssl
from collections.abc import Iterable
from pathlib import Path

from pydicom.dataset import Dataset
from pynetdicom import AE
from pynetdicom.association import Association

from archive.config.peers import AEEntry
from archive.config.sections import TlsSettings
from archive.config.tls import ssl_client_context
from archive.services.outbound import FALLBACK_SYNTAXES

MAX_CONTEXTS = 128  # PS3.8 9.3.2.2: odd context ids 1..255


class DestinationUnavailable(RuntimeError):
    pass


def outbound_tls(tls: TlsSettings, peer_ae: str, peer: AEEntry) -> ssl.SSLContext | None:
    """DICOM TLS for an association we open to `peer` when its AE table entry says `tls = true`:
    its certificate must chain to tls_ca_file and name its host; ours (tls_cert_file) goes along
    for peers that require one. None: plain TCP."""
    if not peer.tls:
        return None
    if tls.ca_file is None:
        raise DestinationUnavailable(
            f"{peer_ae} wants DICOM TLS (tls = true) but tls_ca_file is not set: name the CA its certificate chains to"
        )
    return ssl_client_context(tls.ca_file, tls.cert_file, tls.key_file)


def tls_args(peer: AEEntry, context: ssl.SSLContext | None) -> tuple[ssl.SSLContext, str] | None:
    """pynetdicom's `tls_args` for `associate`: the context and the host name its certificate must name."""
    return (context, str(peer.host)) if context is not None else None


def open_store_association(
    own_ae: str,
    peer_ae: str,
    peer: AEEntry,
    objects: Iterable[tuple[str, str]],
    timeout: float = 30,
    tls: ssl.SSLContext | None = None,
) -> Association:
    """`objects` are (SOP Class UID, stored transfer syntax) pairs; `tls` from `outbound_tls`."""
    ae = AE(ae_title=own_ae)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = timeout
    for sop_class in sorted({c for c, _ in objects}):
        ae.add_requested_context(sop_class, FALLBACK_SYNTAXES)
    for sop_class, syntax in sorted(set(objects)):
        if syntax not in FALLBACK_SYNTAXES and len(ae.requested_contexts) < MAX_CONTEXTS:
            ae.add_requested_context(sop_class, [syntax])
    assert peer.host and peer.port, "the caller checks that the AE table has an address"
    assoc = ae.associate(peer.host, peer.port, ae_title=peer_ae, tls_args=tls_args(peer, tls))
    if not assoc.is_established:
        raise DestinationUnavailable(
            f"{peer_ae} at {peer.host}:{peer.port}{' (TLS)' if tls else ''} did not accept an association"
        )
    no_delay(assoc)
    return assoc


def release(assoc: Association) -> None:
    """`assoc.release()`, first telling the DUL to stop resting if it can (dimse.reactor's
    BusyAwareDUL): 29 -> 1 ms per release of an association to storescp."""
    prepare = getattr(assoc.dul, "prepare_release", None)
    if prepare is not None:
        prepare()
    assoc.release()


def no_delay(assoc: Association) -> None:
    """Each C-STORE waits for its answer: without TCP_NODELAY every one stalls on Nagle's algorithm
    (measured: 53 instead of 246 instances/s to storescp). pynetdicom leaves a requested socket
    without a timeout once connected, so a peer that stops in the middle of a PDU would hold its
    reader (and the lent socket, dimse/direct_store) for ever; the network timeout bounds it."""
    transport = assoc.dul.socket
    if transport is not None and transport.socket is not None:
        transport.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        transport.socket.settimeout(assoc.network_timeout)


def accepted_syntaxes(assoc: Association, sop_class: str) -> set[str]:
    return {str(cx.transfer_syntax[0]) for cx in assoc.accepted_contexts if cx.abstract_syntax == sop_class}


def store(assoc: Association, ds: Dataset | Path, message_id: int, originator_ae: str, originator_message_id: int) -> int | None:
    """The destination's C-STORE status; None when no valid response came. A Path is sent as stored."""
    # a forward has no C-MOVE behind it: no Move Originator attributes at all, rather than empty ones
    response = assoc.send_c_store(
        ds, msg_id=message_id, originator_aet=originator_ae or None, originator_id=originator_message_id or None
    )
    return int(response.Status) if response is not None and "Status" in response else None
