"""De-identification for forwards, on real scanner files: the same original gets the same new UIDs
for one destination and other ones for another, and what cannot be made safe is refused."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydicom import dcmread

from archive.routing.deidentify import NotReleasable, deidentify, destination_key

DATA = (
    Path("/work/shared/data") if Path("/work/shared/data").exists() else Path(__file__).resolve().parents[3] / "shared" / "data"
)


def _ge_mr(n: int = 2):
    return [dcmread(p) for p in sorted(p for p in (DATA / "dcm_qa_ge").rglob("*") if p.is_file())[:n]]


def test_new_uids_are_consistent_per_destination_and_differ_between_destinations() -> None:
    first, second = _ge_mr()
    original_study = str(first.StudyInstanceUID)
    assert original_study == str(second.StudyInstanceUID)
    deidentify(first, "basic", destination_key("secret-0123456789", "RESEARCH"))
    deidentify(second, "basic", destination_key("secret-0123456789", "RESEARCH"))
    assert first.StudyInstanceUID == second.StudyInstanceUID != original_study
    assert first.SOPInstanceUID != second.SOPInstanceUID
    other = _ge_mr(1)[0]
    deidentify(other, "basic", destination_key("secret-0123456789", "TELERAD"))
    assert other.StudyInstanceUID not in (first.StudyInstanceUID, original_study), "another destination cannot link the copies"
    assert first.file_meta.MediaStorageSOPInstanceUID == first.SOPInstanceUID
    assert first.PatientIdentityRemoved == "YES" and len(first.DeidentificationMethod) <= 64


def test_burned_in_annotation_and_unknown_profiles_are_refused() -> None:
    ds = _ge_mr(1)[0]
    ds.BurnedInAnnotation = "YES"
    with pytest.raises(NotReleasable, match="BurnedInAnnotation"):
        deidentify(ds, "basic", b"k" * 32)
    with pytest.raises(ValueError, match="profile"):
        deidentify(_ge_mr(1)[0], "retain-dates", b"k" * 32)
