"""Modality Performed Procedure Step (PS3.4 F.7): what N-CREATE may start and N-SET may change.

A step starts IN PROGRESS and ends COMPLETED or DISCONTINUED; after that it is final. The study
and scheduled step it performs come from its Scheduled Step Attributes Sequence."""

from __future__ import annotations

import json
from dataclasses import dataclass

from pydicom.dataset import Dataset

from archive.dicom.attributes import text

IN_PROGRESS, COMPLETED, DISCONTINUED = "IN PROGRESS", "COMPLETED", "DISCONTINUED"
FINAL = {COMPLETED, DISCONTINUED}
# the SPS status the worklist shows once a modality reports the step
WORKLIST_STATUS = {IN_PROGRESS: "STARTED", COMPLETED: "COMPLETED", DISCONTINUED: "DISCONTINUED"}
MAX_STEP_BYTES = 256 * 1024


class StepRefused(ValueError):
    """An N-CREATE or N-SET that cannot be applied; `status` is the DIMSE status to answer."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status


@dataclass(frozen=True)
class PerformedStep:
    status: str
    study_uid: str | None
    accession_number: str | None
    sps_id: str | None
    modality: str | None
    station_ae: str | None
    item: str  # DICOM JSON


def _described(ds: Dataset) -> PerformedStep:
    scheduled = ds.get("ScheduledStepAttributesSequence") or [Dataset()]
    item = json.dumps(ds.to_json_dict())
    if len(item) > MAX_STEP_BYTES:
        raise StepRefused(0xA700, f"the step is {len(item)} bytes; at most {MAX_STEP_BYTES}")
    return PerformedStep(
        text(ds, "PerformedProcedureStepStatus", 16) or "",
        text(scheduled[0], "StudyInstanceUID", 64),
        text(scheduled[0], "AccessionNumber", 16),
        text(scheduled[0], "ScheduledProcedureStepID", 16),
        text(ds, "Modality", 16),
        text(ds, "PerformedStationAETitle", 16),
        item,
    )


def started(attributes: Dataset) -> PerformedStep:
    """The step an N-CREATE describes; it must begin IN PROGRESS (PS3.4 F.7.2.1.2)."""
    status = text(attributes, "PerformedProcedureStepStatus", 16)
    if status != IN_PROGRESS:
        raise StepRefused(0x0106, f"PerformedProcedureStepStatus must be IN PROGRESS, not {status or 'empty'}")
    return _described(attributes)


def changed(stored: Dataset, modification: Dataset) -> PerformedStep:
    """The step after an N-SET; refused once the step is final (PS3.4 F.7.2.2.2)."""
    current = text(stored, "PerformedProcedureStepStatus", 16)
    if current in FINAL:
        raise StepRefused(0x0110, f"the step is {current}; it may no longer be changed")
    for element in modification:  # a zero-length value empties the attribute, as N-SET means it
        stored[element.tag] = element
    status = text(stored, "PerformedProcedureStepStatus", 16)
    if status not in (IN_PROGRESS, *FINAL):
        raise StepRefused(0x0106, f"PerformedProcedureStepStatus {status!r} is not IN PROGRESS, COMPLETED or DISCONTINUED")
    return _described(stored)
