"""Unified Procedure Steps (PS3.4 CC) as UPS-RS creates and changes them, and the Modality
Worklist item a scheduled one becomes, so a modality sees through MWL what a RIS or a script
scheduled through UPS-RS.

States: SCHEDULED -> IN PROGRESS (claimed with a Transaction UID) -> COMPLETED or CANCELED."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

from pydicom.dataset import Dataset

from archive.dicom.attributes import text
from archive.dicom.uids import is_valid_uid
from archive.services.worklist import WorklistRow, worklist_row

SCHEDULED, IN_PROGRESS, COMPLETED, CANCELED = "SCHEDULED", "IN PROGRESS", "COMPLETED", "CANCELED"
PRIORITIES = {"HIGH", "MEDIUM", "LOW"}
_NEXT = {SCHEDULED: {IN_PROGRESS, CANCELED}, IN_PROGRESS: {COMPLETED, CANCELED}}
_SPS_STATUS = {SCHEDULED: "SCHEDULED", IN_PROGRESS: "STARTED", COMPLETED: "COMPLETED", CANCELED: "CANCELED"}
MAX_WORKITEM_BYTES = 256 * 1024


class WorkitemRefused(ValueError):
    """Answered with `status` (400, 409) and this reason."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status


@dataclass(frozen=True)
class WorkitemRow:
    uid: str
    state: str
    label: str | None
    worklist_label: str | None
    priority: str | None
    start_datetime: str | None
    patient_name: str | None
    patient_id: str | None
    transaction_uid: str | None
    item: str  # DICOM JSON


def row_of(uid: str, ds: Dataset, transaction_uid: str | None = None) -> WorkitemRow:
    item = json.dumps(ds.to_json_dict())
    if len(item) > MAX_WORKITEM_BYTES:
        raise WorkitemRefused(413, f"the workitem is {len(item)} bytes; at most {MAX_WORKITEM_BYTES}")
    return WorkitemRow(
        uid,
        text(ds, "ProcedureStepState", 16) or SCHEDULED,
        text(ds, "ProcedureStepLabel", 64),
        text(ds, "WorklistLabel", 64),
        text(ds, "ScheduledProcedureStepPriority", 16),
        text(ds, "ScheduledProcedureStepStartDateTime", 26),
        text(ds, "PatientName", 324),
        text(ds, "PatientID", 64),
        transaction_uid,
        item,
    )


def new_workitem(ds: Dataset, uid: str) -> WorkitemRow:
    """A workitem to create (PS3.4 CC.2.5.1.3): it starts SCHEDULED and says what and when."""
    if not is_valid_uid(uid):
        raise WorkitemRefused(400, f"workitem UID {uid[:80]!r} is not a valid UID")
    state = text(ds, "ProcedureStepState", 16)
    if state not in (None, SCHEDULED):
        raise WorkitemRefused(400, f"a new workitem is SCHEDULED, not {state}")
    for keyword in ("ProcedureStepLabel", "ScheduledProcedureStepStartDateTime"):
        if not text(ds, keyword):
            raise WorkitemRefused(400, f"{keyword} is required to schedule a workitem")
    priority = text(ds, "ScheduledProcedureStepPriority", 16)
    if priority is not None and priority not in PRIORITIES:
        raise WorkitemRefused(400, f"ScheduledProcedureStepPriority must be HIGH, MEDIUM or LOW, not {priority}")
    ds.ProcedureStepState = SCHEDULED
    ds.SOPClassUID = "1.2.840.10008.5.1.4.34.6.1"  # UPS Push
    ds.SOPInstanceUID = uid
    return row_of(uid, ds)


def changed_state(stored: Dataset, uid: str, wanted: str, transaction_uid: str | None, held_by: str | None) -> WorkitemRow:
    """PS3.4 CC.2.1.1: claim with a new Transaction UID, then complete or cancel with the same one."""
    current = text(stored, "ProcedureStepState", 16) or SCHEDULED
    if wanted not in _NEXT.get(current, set()):
        raise WorkitemRefused(409, f"the workitem is {current}; it cannot become {wanted}")
    if not transaction_uid or not is_valid_uid(transaction_uid):
        raise WorkitemRefused(400, "a state change needs a valid TransactionUID")
    if current == IN_PROGRESS and transaction_uid != held_by:
        raise WorkitemRefused(409, "the TransactionUID is not the one that claimed this workitem")
    stored.ProcedureStepState = wanted
    return row_of(uid, stored, transaction_uid)


def worklist_row_of(uid: str, ds: Dataset) -> WorklistRow | None:
    """The MWL item of a workitem that names its requested procedure (Referenced Request Sequence
    with an Accession Number); None for one that does not (an AI task, say)."""
    requests = ds.get("ReferencedRequestSequence") or []
    accession = text(requests[0], "AccessionNumber", 16) if requests else None
    if not accession:
        return None
    start = text(ds, "ScheduledProcedureStepStartDateTime", 26) or ""
    stations = [text(c, "CodeValue", 16) for c in ds.get("ScheduledStationNameCodeSequence") or []]
    classes = ds.get("ScheduledStationClassCodeSequence") or []
    mwl = Dataset()
    for keyword in ("PatientName", "PatientID", "PatientBirthDate", "PatientSex"):
        if keyword in ds:
            setattr(mwl, keyword, ds.get(keyword))
    mwl.AccessionNumber = accession
    for keyword in ("StudyInstanceUID", "RequestedProcedureID", "RequestedProcedureDescription"):
        if keyword in requests[0]:
            setattr(mwl, keyword, requests[0].get(keyword))
    step = Dataset()
    step.ScheduledProcedureStepID = "UPS" + hashlib.sha1(uid.encode()).hexdigest()[:13]  # SH: 16 characters
    step.ScheduledProcedureStepDescription = text(ds, "ProcedureStepLabel", 64)
    step.ScheduledProcedureStepStartDate, step.ScheduledProcedureStepStartTime = start[:8], start[8:14]
    step.ScheduledStationAETitle = [s for s in stations if s]
    if classes:
        step.Modality = text(classes[0], "CodeValue", 16)
    step.ScheduledProcedureStepStatus = _SPS_STATUS[text(ds, "ProcedureStepState", 16) or SCHEDULED]
    mwl.ScheduledProcedureStepSequence = [step]
    return worklist_row(mwl)
