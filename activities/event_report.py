"""Send a Storage Commitment N-EVENT-REPORT to the requesting AE on a new association."""

from __future__ import annotations

import ssl

from pydicom.dataset import Dataset
from pynetdicom import AE, build_role
from pynetdicom.sop_class import StorageCommitmentPushModel  # type: ignore[attr-defined]  # generated at import

from archive.config.peers import AEEntry
from dimse.store_scu import release, tls_args

COMMITMENT_INSTANCE = "1.2.840.10008.1.20.1.1"  # the Well-known Storage Commitment SOP Instance


class ReportNotDelivered(RuntimeError):
    pass


def send_event_report(
    own_ae: str, peer_ae: str, peer: AEEntry, ds: Dataset, event_type: int, tls: ssl.SSLContext | None = None
) -> None:
    """`tls`: DICOM TLS when the requester's AE table entry says so (dimse.store_scu.outbound_tls)."""
    ae = AE(ae_title=own_ae)
    ae.add_requested_context(StorageCommitmentPushModel)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 30
    # we are the SCP of the SOP class opening the association, so we propose the SCP role
    role = build_role(StorageCommitmentPushModel, scu_role=False, scp_role=True)
    assert peer.host and peer.port, "the caller checks that the AE table has an address"
    assoc = ae.associate(peer.host, peer.port, ae_title=peer_ae, ext_neg=[role], tls_args=tls_args(peer, tls))
    if not assoc.is_established:
        raise ReportNotDelivered(f"{peer_ae} at {peer.host}:{peer.port}{' (TLS)' if tls else ''} did not accept an association")
    try:
        status, _ = assoc.send_n_event_report(ds, event_type, StorageCommitmentPushModel, COMMITMENT_INSTANCE)
        code = status.get("Status") if status is not None else None  # empty: no valid response came back
        if code != 0:
            raise ReportNotDelivered(f"{peer_ae} answered N-EVENT-REPORT with status {code}")
    finally:
        release(assoc)
