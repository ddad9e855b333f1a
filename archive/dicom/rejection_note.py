"""IHE IOCM rejection notes: a Key Object Selection document whose title (Concept Name) is one of
PS3.16 CID 7011's rejection codes withdraws the instances it references. Recognised at receipt,
from the header receipt already read (a KOS has no pixels), so the rejection lands in the same
transaction as the note itself (archive/index/rejections.py)."""

from __future__ import annotations

from dataclasses import dataclass

from pydicom.dataset import Dataset

from archive.dicom.uids import is_safe_uid

KEY_OBJECT_SELECTION = "1.2.840.10008.5.1.4.1.1.88.59"
# PS3.16 CID 7011 "Rejected for Quality Reasons" and its siblings, coding scheme DCM
REJECTION_CODES = {
    "113001": "Rejected for Quality Reasons",
    "113037": "Rejected for Patient Safety Reasons",
    "113038": "Incorrect Modality Worklist Entry",
    "113039": "Data Retention Policy Expired",
}
RETENTION_EXPIRED = "113039"  # its meaning says the objects go at once, not after a grace period
# C-STORE statuses (and STOW-RS FailureReasons) of IOCM refusals: dcm4chee's codes, in PS3.4's
# A7xx range (Refused), so that tools which know them from there recognise them here
REJECTED_OBJECT = 0xA771  # a subsequent occurrence of a rejected object
NO_SUCH_INSTANCE = 0xA772  # the note names an instance this archive does not hold in the note's study
CLASS_INSTANCE_CONFLICT = 0xA773  # the note names an instance with another SOP class or series than stored
REFUSALS = (REJECTED_OBJECT, NO_SUCH_INSTANCE, CLASS_INSTANCE_CONFLICT)  # permanent: sending again will not help
MAX_REFERENCES = 50_000  # a note withdrawing more than any study holds is refused before the index sees it


class RejectionRefused(Exception):
    """A receipt IOCM refuses (a rejected instance sent again, a note that cannot apply): its
    transaction rolls back, so nothing changes."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


class BadRejectionNote(ValueError):
    """A rejection note that cannot be applied as sent; nothing is stored or changed."""


@dataclass(frozen=True)
class RejectedRef:
    study_uid: str
    series_uid: str
    sop_class_uid: str
    sop_uid: str


@dataclass(frozen=True)
class RejectionNote:
    code: str
    refs: tuple[RejectedRef, ...]

    @property
    def meaning(self) -> str:
        return REJECTION_CODES[self.code]


def rejected_again(code: str) -> str:
    """The reason a re-sent rejected instance is refused with (short: a C-STORE's ErrorComment is 64 characters)."""
    return f"rejected ({code}, IOCM): an admin must restore it first"


def rejection_note(ds: Dataset) -> RejectionNote | None:
    """The rejection `ds` makes, None when it is not a rejection note (any other KOS included);
    BadRejectionNote when it is one but names nothing, too much, or something that is not a UID."""
    code = _rejection_code(ds)
    if code is None:
        return None
    refs = tuple(_references(ds))
    if not refs:
        raise BadRejectionNote("the rejection note references no instance (Current Requested Procedure Evidence Sequence)")
    return RejectionNote(code, refs)


def _rejection_code(ds: Dataset) -> str | None:
    if str(ds.get("SOPClassUID", "")) != KEY_OBJECT_SELECTION:
        return None
    titles = ds.get("ConceptNameCodeSequence") or []
    if len(titles) != 1:
        return None
    title = titles[0]
    code, scheme = str(title.get("CodeValue", "")), str(title.get("CodingSchemeDesignator", ""))
    return code if scheme == "DCM" and code in REJECTION_CODES else None


def _references(ds: Dataset) -> list[RejectedRef]:
    refs: list[RejectedRef] = []
    for study in ds.get("CurrentRequestedProcedureEvidenceSequence") or []:
        for series in study.get("ReferencedSeriesSequence") or []:
            for item in series.get("ReferencedSOPSequence") or []:
                refs.append(_ref(study, series, item))
                if len(refs) > MAX_REFERENCES:
                    raise BadRejectionNote(f"the rejection note references more than {MAX_REFERENCES} instances")
    return refs


def _ref(study: Dataset, series: Dataset, item: Dataset) -> RejectedRef:
    ref = RejectedRef(
        str(study.get("StudyInstanceUID", "")),
        str(series.get("SeriesInstanceUID", "")),
        str(item.get("ReferencedSOPClassUID", "")),
        str(item.get("ReferencedSOPInstanceUID", "")),
    )
    for name, value in zip(
        ("Study Instance UID", "Series Instance UID", "SOP Class UID", "SOP Instance UID"), vars(ref).values()
    ):
        if not is_safe_uid(value):
            raise BadRejectionNote(f"rejection note: {name} {str(value)[:64]!r} is not a UID")
    return ref
