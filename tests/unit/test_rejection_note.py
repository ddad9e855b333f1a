"""Recognising IOCM rejection notes (archive/dicom/rejection_note.py) in Key Object Selection
documents that highdicom builds over real scanner files, and the statuses their refusals take."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.sr.codedict import codes

from archive.dicom import dicom_status as st
from archive.dicom.rejection_note import (
    MAX_REFERENCES,
    REFUSALS,
    REJECTED_OBJECT,
    BadRejectionNote,
    rejection_note,
)
from archive.services.receipt import Outcome, Receipt
from testkit.rejection_notes import PATIENT_SAFETY, RETENTION_EXPIRED
from testkit.rejection_notes import rejection_note as build


@pytest.fixture
def nih(data_dir: Path) -> list[Path]:
    return sorted(p for p in (data_dir / "dcm_qa_nih").rglob("*") if p.is_file())


def test_a_rejection_note_names_every_instance_it_withdraws(nih: list[Path]) -> None:
    files = nih[:4]
    note = rejection_note(build(files, PATIENT_SAFETY))
    assert note is not None and note.code == "113037" and note.meaning == "Rejected for Patient Safety Reasons"
    headers = [dcmread(p, stop_before_pixels=True) for p in files]
    assert {(r.study_uid, r.series_uid, r.sop_class_uid, r.sop_uid) for r in note.refs} == {
        (str(h.StudyInstanceUID), str(h.SeriesInstanceUID), str(h.SOPClassUID), str(h.SOPInstanceUID)) for h in headers
    }
    assert rejection_note(build(files[:1], RETENTION_EXPIRED)).code == "113039"  # type: ignore[union-attr]


def test_other_key_object_selections_and_images_are_not_rejections(nih: list[Path]) -> None:
    assert rejection_note(build(nih[:1], codes.DCM.OfInterest)) is None  # an ordinary key image note
    assert rejection_note(dcmread(nih[0], stop_before_pixels=True)) is None
    ds = build(nih[:1])
    ds.ConceptNameCodeSequence[0].CodingSchemeDesignator = "99LOCAL"  # the code, but not DCM's
    assert rejection_note(ds) is None


def test_a_rejection_note_that_names_nothing_or_no_uid_is_refused(nih: list[Path]) -> None:
    ds = build(nih[:1])
    ds.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence[0].ReferencedSOPSequence = []
    with pytest.raises(BadRejectionNote, match="references no instance"):
        rejection_note(ds)
    ds = build(nih[:1])
    ds.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence[0].SeriesInstanceUID = "a/b"
    with pytest.raises(BadRejectionNote, match="Series Instance UID 'a/b' is not a UID"):
        rejection_note(ds)


def test_a_rejection_note_naming_too_many_instances_is_refused(nih: list[Path]) -> None:
    ds = build(nih[:1])
    sops = ds.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence[0].ReferencedSOPSequence
    sops.extend([sops[0]] * MAX_REFERENCES)
    with pytest.raises(BadRejectionNote, match=f"more than {MAX_REFERENCES}"):
        rejection_note(ds)


def test_iocm_refusals_are_permanent_failures_with_their_own_codes(nih: list[Path]) -> None:
    for code in REFUSALS:
        assert code & 0xF000 == 0xA000 and not st.is_transient(code)
    assert st.receipt_status(Outcome.REFUSED) == REJECTED_OBJECT
    assert st.status_of(Receipt(Outcome.REFUSED, "x", status=0xA773)) == 0xA773
    assert st.status_of(Receipt(Outcome.FAILED, "x")) == st.OUT_OF_RESOURCES
