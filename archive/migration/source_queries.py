"""The identifiers a migration sends to the source (Study Root), and what it reads from the answers.

A study is found by its StudyDate, one day at a time, so a PACS that caps the answers to one
C-FIND (often 500 or 1,000) still lists everything unless one day holds more; such a day is asked
again hour by hour (StudyTime ranges). Optional keys a legacy PACS does not support come back empty
or absent (dcmtk's dcmqrscp gives neither ModalitiesInStudy nor NumberOfStudyRelatedInstances):
then the study's series are asked for, and their instances counted.
"""

from __future__ import annotations

from pydicom.dataset import Dataset

from archive.index.migration_progress import FoundStudy

HOURS = [(f"{h:02d}0000", f"{h:02d}5959") for h in range(24)]


def study_query(day: str, modality: str | None = None, hours: tuple[str, str] | None = None) -> Dataset:
    ds = Dataset()
    ds.QueryRetrieveLevel = "STUDY"
    ds.StudyInstanceUID = ""
    ds.StudyDate = day
    ds.StudyTime = f"{hours[0]}-{hours[1]}" if hours else ""
    ds.ModalitiesInStudy = modality or ""
    ds.NumberOfStudyRelatedInstances = ""
    return ds


def series_query(study_uid: str) -> Dataset:
    ds = Dataset()
    ds.QueryRetrieveLevel = "SERIES"
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = ""
    ds.Modality = ""
    ds.NumberOfSeriesRelatedInstances = ""
    return ds


def image_query(study_uid: str, series_uid: str) -> Dataset:
    ds = Dataset()
    ds.QueryRetrieveLevel = "IMAGE"
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.SOPInstanceUID = ""
    return ds


def move_identifier(study_uid: str) -> Dataset:
    ds = Dataset()
    ds.QueryRetrieveLevel = "STUDY"
    ds.StudyInstanceUID = study_uid
    return ds


def count_of(answer: Dataset, keyword: str) -> int | None:
    """An instance count the source gave, or None where it left the key empty or out."""
    value = answer.get(keyword)
    if value is None or value == "":
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def modalities_of(answer: Dataset, keyword: str = "ModalitiesInStudy") -> set[str]:
    value = answer.get(keyword)
    if value is None or value == "":
        return set()
    values = [value] if isinstance(value, str) else list(value)
    return {str(v).strip().upper() for v in values if str(v).strip()}


def found_study(answer: Dataset) -> FoundStudy | None:
    uid = str(answer.get("StudyInstanceUID", "") or "").strip()
    if not uid:
        return None
    return FoundStudy(uid, count_of(answer, "NumberOfStudyRelatedInstances"))
