"""Worklist items (scheduled procedure steps) as a RIS sends them: validated, and the columns the
Modality Worklist matches on taken from them. An item is one Requested Procedure (Accession
Number) with one Scheduled Procedure Step; the pair identifies it, and importing it again updates it."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from pydicom.dataset import Dataset

from archive.dicom.attributes import text

MAX_ITEM_BYTES = 64 * 1024  # a worklist item is a few KB; more is not a worklist item


class ItemRejected(ValueError):
    """The item cannot be scheduled; the message says what to fix."""


@dataclass(frozen=True)
class WorklistRow:
    accession_number: str
    sps_id: str
    patient_id: str | None
    patient_name: str | None
    patient_birth_date: str | None
    patient_sex: str | None
    study_uid: str | None
    requested_procedure_id: str | None
    modality: str | None
    station_aes: list[str]
    start_date: str | None
    start_time: str | None
    performing_physician: str | None
    sps_description: str | None
    sps_status: str | None
    item: str  # DICOM JSON


def worklist_row(ds: Dataset) -> WorklistRow:
    accession = text(ds, "AccessionNumber", 16)
    steps = ds.get("ScheduledProcedureStepSequence")
    if not accession:
        raise ItemRejected("AccessionNumber is missing: it identifies the requested procedure")
    if not steps or len(steps) != 1:
        raise ItemRejected(f"item {accession}: needs exactly one ScheduledProcedureStepSequence item")
    step = steps[0]
    sps_id = text(step, "ScheduledProcedureStepID", 16)
    if not sps_id:
        raise ItemRejected(f"item {accession}: ScheduledProcedureStepID is missing")
    item = json.dumps(ds.to_json_dict())
    if len(item) > MAX_ITEM_BYTES:
        raise ItemRejected(f"item {accession}/{sps_id}: {len(item)} bytes is more than {MAX_ITEM_BYTES}")
    stations = step.get("ScheduledStationAETitle") or []
    return WorklistRow(
        accession,
        sps_id,
        text(ds, "PatientID", 64),
        text(ds, "PatientName", 324),
        text(ds, "PatientBirthDate", 8),
        text(ds, "PatientSex", 16),
        text(ds, "StudyInstanceUID", 64),
        text(ds, "RequestedProcedureID", 16),
        text(step, "Modality", 16),
        [str(s).strip() for s in ([stations] if isinstance(stations, str) else stations)],
        text(step, "ScheduledProcedureStepStartDate", 8),
        text(step, "ScheduledProcedureStepStartTime", 16),
        text(step, "ScheduledPerformingPhysicianName", 324),
        text(step, "ScheduledProcedureStepDescription", 64),
        text(step, "ScheduledProcedureStepStatus", 16) or "SCHEDULED",
        item,
    )


def parse_items(document: Any) -> list[Dataset]:
    """DICOM JSON (one object or a list of them) as datasets; ItemRejected names the bad one."""
    objects = document if isinstance(document, list) else [document]
    out = []
    for number, obj in enumerate(objects, start=1):
        if not isinstance(obj, dict):
            raise ItemRejected(f"item {number}: not a DICOM JSON object")
        try:
            out.append(Dataset.from_json(obj))
        except Exception as err:  # noqa: BLE001 - pydicom raises many kinds for malformed JSON
            raise ItemRejected(f"item {number}: not valid DICOM JSON: {err}") from None
    return out
