"""The audit trail's record of an IOCM rejection note received: who sent it, which note, which
code, how many instances it withdrew (PS3.15 DICOM Instances Accessed, action Update)."""

from __future__ import annotations

from archive.audit import AuditAction, AuditEvent, Outcome
from archive.dicom.rejection_note import REJECTION_CODES
from archive.services.receipt import Receipt


def rejection_event(receipt: Receipt, source: str) -> AuditEvent:
    assert receipt.attributes is not None and receipt.rejection_code is not None
    a = receipt.attributes
    sender, _, peer = source.partition(":")
    return AuditEvent(
        action=AuditAction.REJECT,
        outcome=Outcome.SUCCESS,
        subject=f"ae:{peer}" if sender == "dimse" else source,
        method="ae" if sender == "dimse" else "oidc",
        source="dimse" if sender == "dimse" else "dicomweb",
        tenant=receipt.tenant,
        study_uid=a.study_uid,
        sop_uid=a.sop_uid,
        detail={
            "rejection_note": a.sop_uid,
            "code": receipt.rejection_code,
            "meaning": REJECTION_CODES.get(receipt.rejection_code, ""),
            "instances": receipt.rejected,
        },
    )
