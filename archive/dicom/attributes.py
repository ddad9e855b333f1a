"""The attributes the index keeps, taken from a parsed header."""

from __future__ import annotations

from dataclasses import dataclass

from pydicom.dataset import Dataset
from pydicom.multival import MultiValue


def text(ds: Dataset, keyword: str, limit: int = 256) -> str | None:
    """A string value as DICOM writes it (multiple values joined by backslash), or None."""
    try:
        value = ds.get(keyword)
    except Exception:  # noqa: BLE001 - an undecodable value is indexed as absent, not fatal
        return None
    if value is None or value == "":
        return None
    if isinstance(value, MultiValue):
        value = "\\".join(str(v) for v in value)
    out = str(value).strip().replace("\x00", "")
    return out[:limit] or None


def integer(ds: Dataset, keyword: str) -> int | None:
    try:
        value = ds.get(keyword)
        if isinstance(value, MultiValue):
            value = value[0] if value else None
        return None if value is None or value == "" else int(value)
    except Exception:  # noqa: BLE001
        return None


@dataclass(frozen=True)
class InstanceAttributes:
    sop_class_uid: str
    sop_uid: str
    study_uid: str
    series_uid: str
    patient_id: str
    issuer: str
    patient_name: str | None
    patient_birth_date: str | None
    patient_sex: str | None
    study_date: str | None
    study_time: str | None
    accession_number: str | None
    study_id: str | None
    referring_physician: str | None
    study_description: str | None
    modality: str | None
    series_number: int | None
    series_description: str | None
    body_part: str | None
    series_date: str | None
    series_time: str | None
    instance_number: int | None
    number_of_frames: int | None
    rows: int | None
    columns: int | None
    bits_allocated: int | None


# every top-level attribute `extract` reads: receipt's header walk keeps these (archive/header)
INDEXED_KEYWORDS = (
    "SOPClassUID",
    "SOPInstanceUID",
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "PatientID",
    "IssuerOfPatientID",
    "PatientName",
    "PatientBirthDate",
    "PatientSex",
    "StudyDate",
    "StudyTime",
    "AccessionNumber",
    "StudyID",
    "ReferringPhysicianName",
    "StudyDescription",
    "Modality",
    "SeriesNumber",
    "SeriesDescription",
    "BodyPartExamined",
    "SeriesDate",
    "SeriesTime",
    "InstanceNumber",
    "NumberOfFrames",
    "Rows",
    "Columns",
    "BitsAllocated",
)


def extract(ds: Dataset) -> InstanceAttributes:
    return InstanceAttributes(
        sop_class_uid=str(ds.SOPClassUID),
        sop_uid=str(ds.SOPInstanceUID),
        study_uid=str(ds.StudyInstanceUID),
        series_uid=str(ds.SeriesInstanceUID),
        patient_id=text(ds, "PatientID", 64) or "",
        issuer=text(ds, "IssuerOfPatientID", 64) or "",
        patient_name=text(ds, "PatientName", 324),
        patient_birth_date=text(ds, "PatientBirthDate", 8),
        patient_sex=text(ds, "PatientSex", 16),
        study_date=text(ds, "StudyDate", 8),
        study_time=text(ds, "StudyTime", 16),
        accession_number=text(ds, "AccessionNumber", 16),
        study_id=text(ds, "StudyID", 16),
        referring_physician=text(ds, "ReferringPhysicianName", 324),
        study_description=text(ds, "StudyDescription", 64),
        modality=text(ds, "Modality", 16),
        series_number=integer(ds, "SeriesNumber"),
        series_description=text(ds, "SeriesDescription", 64),
        body_part=text(ds, "BodyPartExamined", 16),
        series_date=text(ds, "SeriesDate", 8),
        series_time=text(ds, "SeriesTime", 16),
        instance_number=integer(ds, "InstanceNumber"),
        number_of_frames=integer(ds, "NumberOfFrames"),
        rows=integer(ds, "Rows"),
        columns=integer(ds, "Columns"),
        bits_allocated=integer(ds, "BitsAllocated"),
    )
