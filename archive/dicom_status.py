"""DICOM status codes the archive answers with, defined once for DIMSE and DICOMweb
(STOW-RS failures reuse the C-STORE codes, PS3.18 Table 10.5.3-1)."""

from __future__ import annotations

from archive.receipt import Outcome

SUCCESS = 0x0000
CANCEL = 0xFE00
PENDING = 0xFF00
PROCESSING_FAILURE = 0x0110
DUPLICATE_SOP_INSTANCE = 0x0111
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
CANNOT_UNDERSTAND = 0xC000

_RECEIPT_STATUS = {
    Outcome.STORED: SUCCESS,
    Outcome.DUPLICATE: SUCCESS,
    Outcome.REPLACED: SUCCESS,
    Outcome.CONFLICT: DUPLICATE_SOP_INSTANCE,
    Outcome.INVALID: CANNOT_UNDERSTAND,
    Outcome.MISMATCH: DATASET_MISMATCH,
    Outcome.FAILED: OUT_OF_RESOURCES,
}


def receipt_status(outcome: Outcome) -> int:
    """The C-STORE status for a receipt's outcome."""
    return _RECEIPT_STATUS[outcome]


def failure_status(outcome: Outcome) -> int:
    """The STOW-RS FailureReason for an outcome that did not store."""
    code = _RECEIPT_STATUS[outcome]
    if code == SUCCESS:
        raise ValueError(f"{outcome} is not a failure")
    return code
