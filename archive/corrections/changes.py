"""What an update may change: patient and study attributes only (the identity of series and
instances never changes), each value checked against its VR before anything is written."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydicom import config
from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.dataset import Dataset
from pydicom.valuerep import validate_value

PATIENT_KEYWORDS = ("PatientName", "PatientID", "IssuerOfPatientID", "PatientBirthDate", "PatientSex")
STUDY_KEYWORDS = ("StudyDescription", "AccessionNumber", "ReferringPhysicianName", "StudyID")
ALLOWED = PATIENT_KEYWORDS + STUDY_KEYWORDS


class BadChange(ValueError):
    """A change that cannot be applied as asked; nothing is written."""


@dataclass(frozen=True)
class Changes:
    """Keyword to new value ("" empties it), validated."""

    values: dict[str, str]

    @classmethod
    def of(cls, values: dict[str, str]) -> "Changes":
        if not values:
            raise BadChange("the change names no attribute")
        for keyword, value in values.items():
            _check(keyword, value)
        return cls(dict(sorted(values.items())))

    @classmethod
    def from_dicom_json(cls, dataset: Any) -> "Changes":
        """A change dataset in the DICOM JSON model (PS3.18 F.2), as a bulk update sends it."""
        if not isinstance(dataset, dict):
            raise BadChange("changeDataset must be a DICOM JSON object")
        values: dict[str, str] = {}
        for tag, element in dataset.items():
            keyword = _keyword(tag)
            values[keyword] = _json_value(keyword, element)
        return cls.of(values)

    def apply(self, ds: Dataset) -> dict[str, str | None]:
        """Set the new values on `ds`; what each attribute held before (None: absent)."""
        before: dict[str, str | None] = {}
        for keyword, value in self.values.items():
            before[keyword] = str(ds[keyword].value) if keyword in ds else None
            setattr(ds, keyword, value)
        return before


def _keyword(tag: str) -> str:
    for keyword in ALLOWED:
        if f"{tag_for_keyword(keyword):08X}" == str(tag).upper():
            return keyword
    raise BadChange(f"attribute {str(tag)[:16]} cannot be changed: only {', '.join(ALLOWED)}")


def _json_value(keyword: str, element: Any) -> str:
    values = element.get("Value", []) if isinstance(element, dict) else None
    if not isinstance(values, list) or len(values) > 1:
        raise BadChange(f"{keyword} must be an object with a Value of at most one item")
    if not values:
        return ""
    value = values[0]
    if isinstance(value, dict):  # PN: {"Alphabetic": "..."}
        value = "=".join(str(value.get(group, "")) for group in ("Alphabetic", "Ideographic", "Phonetic")).rstrip("=")
    if not isinstance(value, str):
        raise BadChange(f"{keyword} must be a string")
    return value


def _check(keyword: str, value: str) -> None:
    if keyword not in ALLOWED:
        raise BadChange(f"{keyword[:64]} cannot be changed: only {', '.join(ALLOWED)}")
    if not isinstance(value, str):
        raise BadChange(f"{keyword} must be a string")
    if keyword == "PatientID" and not value.strip():
        raise BadChange("PatientID cannot be emptied")
    try:
        validate_value(dictionary_VR(keyword), value, config.RAISE)
    except ValueError as err:
        raise BadChange(f"{keyword}: {err}") from None
