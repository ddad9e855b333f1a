"""Send a Storage Commitment N-EVENT-REPORT to the requesting AE on a new association."""

from __future__ import annotations

from pydicom.dataset import Dataset
from pynetdicom import AE, build_role
from pynetdicom.sop_class import StorageCommitmentPushModel  # type: ignore[attr-defined]  # generated at import

from archive.settings import AEEntry

COMMITMENT_INSTANCE = "1.2.840.10008.1.20.1.1"  # the Well-known Storage Commitment SOP Instance
NO_SUCH_OBJECT = 0x0112
PROCESSING_FAILURE = 0x0110
CLASS_INSTANCE_CONFLICT = 0x0119


class ReportNotDelivered(RuntimeError):
    pass


def report_dataset(transaction_uid: str, committed: list[tuple[str, str]], failed: list[tuple[str, str, int]]) -> Dataset:
    ds = Dataset()
    ds.TransactionUID = transaction_uid
    if committed:
        ds.ReferencedSOPSequence = [_ref(c, i) for c, i in committed]
    if failed:
        ds.FailedSOPSequence = [_ref(c, i, reason) for c, i, reason in failed]
    return ds


def _ref(sop_class: str, sop_instance: str, reason: int | None = None) -> Dataset:
    item = Dataset()
    item.ReferencedSOPClassUID = sop_class
    item.ReferencedSOPInstanceUID = sop_instance
    if reason is not None:
        item.FailureReason = reason
    return item


def send_event_report(own_ae: str, peer_ae: str, peer: AEEntry, ds: Dataset, event_type: int) -> None:
    ae = AE(ae_title=own_ae)
    ae.add_requested_context(StorageCommitmentPushModel)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 30
    # we are the SCP of the SOP class opening the association, so we propose the SCP role
    role = build_role(StorageCommitmentPushModel, scu_role=False, scp_role=True)
    assert peer.host and peer.port, "the caller checks that the AE table has an address"
    assoc = ae.associate(peer.host, peer.port, ae_title=peer_ae, ext_neg=[role])
    if not assoc.is_established:
        raise ReportNotDelivered(f"{peer_ae} at {peer.host}:{peer.port} did not accept an association")
    try:
        status, _ = assoc.send_n_event_report(ds, event_type, StorageCommitmentPushModel, COMMITMENT_INSTANCE)
        code = status.get("Status") if status is not None else None  # empty: no valid response came back
        if code != 0:
            raise ReportNotDelivered(f"{peer_ae} answered N-EVENT-REPORT with status {code}")
    finally:
        assoc.release()
