"""DICOM status codes the archive answers with, defined once for DIMSE and DICOMweb
(STOW-RS failures reuse the C-STORE codes, PS3.18 Table 10.5.3-1)."""

from __future__ import annotations

from archive.dicom.rejection_note import REFUSALS, REJECTED_OBJECT
from archive.services.receipt import Outcome, Receipt

SUCCESS = 0x0000
CANCEL = 0xFE00
PENDING = 0xFF00
PROCESSING_FAILURE = 0x0110
DUPLICATE_SOP_INSTANCE = 0x0111  # N-CREATE only (PS3.7 C.5.x); never a C-STORE status
NO_SUCH_OBJECT_INSTANCE = 0x0112
NO_SUCH_ACTION_TYPE = 0x0123
NOT_AUTHORIZED = 0x0124  # PS3.7 C.5.x "Refused: Not Authorized"
MISSING_ATTRIBUTE = 0x0120
INVALID_ATTRIBUTE_VALUE = 0x0106
CLASS_INSTANCE_CONFLICT = 0x0119
OUT_OF_RESOURCES = 0xA700
OUT_OF_RESOURCES_MATCHES = 0xA701  # C-FIND/C-MOVE: unable to calculate the number of matches
OUT_OF_RESOURCES_SUBOPERATIONS = 0xA702  # C-MOVE/C-GET: unable to perform sub-operations
MOVE_DESTINATION_UNKNOWN = 0xA801
IDENTIFIER_DOES_NOT_MATCH = 0xA900  # C-FIND/C-MOVE/C-GET: identifier does not match SOP class
SUBOPERATIONS_WARNING = 0xB000  # C-MOVE/C-GET: some sub-operations failed
SOP_CLASS_NOT_SUPPORTED = 0x0122
DATASET_MISMATCH = 0xA900
# PS3.4 B.2.3 (Table B.2-1) allows a C-STORE failure only in A7xx (out of resources: worth a retry),
# A9xx (the data set does not fit) and Cxxx (cannot understand). Changed content under a stored SOP
# Instance UID is permanent and the data set itself is fine, so it takes an A9xx code of its own,
# apart from A900 (a dataset that is not the requested object); ErrorComment carries the reason.
CONFLICTING_DUPLICATE = 0xA901
CANNOT_UNDERSTAND = 0xC000

# duplicate_policy "reject" (the default): the same object again (same bytes, or the same attributes
# and pixels in another transfer syntax) is DUPLICATE, changed content is CONFLICT. "replace": changed
# content (a transcoded resend included) is REPLACED. Settings refuse any other policy at start-up.
_RECEIPT_STATUS = {
    Outcome.STORED: SUCCESS,
    Outcome.DUPLICATE: SUCCESS,
    Outcome.REPLACED: SUCCESS,
    Outcome.CONFLICT: CONFLICTING_DUPLICATE,
    Outcome.INVALID: CANNOT_UNDERSTAND,
    Outcome.MISMATCH: DATASET_MISMATCH,
    Outcome.FAILED: OUT_OF_RESOURCES,
    Outcome.REFUSED: REJECTED_OBJECT,
    Outcome.QUOTA: OUT_OF_RESOURCES,  # the tenant's storage quota (ErrorComment says so)  # IOCM; the receipt names its own code (archive/dicom/rejection_note.py)
}


def receipt_status(outcome: Outcome) -> int:
    """The C-STORE status for a receipt's outcome."""
    return _RECEIPT_STATUS[outcome]


def status_of(receipt: Receipt) -> int:
    """The C-STORE status (or STOW-RS FailureReason) for a receipt: the one it names, else its outcome's."""
    return receipt.status if receipt.status is not None else receipt_status(receipt.outcome)


def failure_status(outcome: Outcome) -> int:
    """The STOW-RS FailureReason for an outcome that did not store."""
    code = _RECEIPT_STATUS[outcome]
    if code == SUCCESS:
        raise ValueError(f"{outcome} is not a failure")
    return code


def is_transient(code: int) -> bool:
    """A7xx: the archive could not store now (index or blob store unreachable); the same send may succeed later."""
    return code & 0xFF00 == OUT_OF_RESOURCES and code not in REFUSALS
