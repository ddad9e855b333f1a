"""What an update may change (archive/corrections/changes.py): patient and study attributes only,
each value checked against its VR, from keyword tables and from a bulk update's DICOM JSON; and a
rewrite of a real object that changes those attributes and nothing else."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydicom import dcmread

from archive.blobstore.local import LocalBlobStore
from archive.corrections.changes import BadChange, Changes
from archive.corrections.rewrite import rewrite


def test_a_change_dataset_in_dicom_json_becomes_keyword_values() -> None:
    changes = Changes.from_dicom_json(
        {
            "00100010": {"vr": "PN", "Value": [{"Alphabetic": "Roe^Jane", "Ideographic": "ロー^ジェーン"}]},
            "00081030": {"vr": "LO", "Value": ["Head"]},
            "00100030": {"vr": "DA"},  # no Value: emptied
        }
    )
    assert changes.values == {"PatientBirthDate": "", "PatientName": "Roe^Jane=ロー^ジェーン", "StudyDescription": "Head"}


@pytest.mark.parametrize(
    ("dataset", "reason"),
    [
        ({"00080060": {"vr": "CS", "Value": ["CT"]}}, "cannot be changed"),  # Modality: a series attribute
        ({"0020000D": {"vr": "UI", "Value": ["1.2.3"]}}, "cannot be changed"),  # the study's identity
        ({"00100020": {"vr": "LO", "Value": [""]}}, "PatientID cannot be emptied"),
        ({"00100020": {"vr": "LO", "Value": ["A", "B"]}}, "at most one item"),
        ({"00100020": {"vr": "LO", "Value": [7]}}, "must be a string"),
        ({"00100040": {"vr": "CS", "Value": ["female"]}}, "PatientSex"),
        ({}, "names no attribute"),
        (["not", "an", "object"], "DICOM JSON object"),
    ],
)
def test_what_an_update_may_not_do_is_refused(dataset: object, reason: str) -> None:
    with pytest.raises(BadChange, match=reason):
        Changes.from_dicom_json(dataset)


def test_a_rewrite_changes_the_named_attributes_and_keeps_everything_else(data_dir: Path, tmp_path: Path) -> None:
    source = sorted(p for p in (data_dir / "dcm_qa_nih").rglob("*") if p.is_file())[0]
    blobs = LocalBlobStore(tmp_path / "blobs", tmp_path / "spool")
    blobs.commit(blobs.stage_file(_copy(source, blobs.new_spool_file())), "t/a.dcm")
    made = rewrite(blobs, "t/a.dcm", Changes.of({"PatientID": "NEW-1", "PatientName": "Doe^Jane"}))
    original, written = dcmread(source), dcmread(made.staged.path)
    assert made.before == {"PatientID": str(original.PatientID), "PatientName": str(original.PatientName)}
    assert (written.PatientID, str(written.PatientName)) == ("NEW-1", "Doe^Jane")
    assert written.file_meta.TransferSyntaxUID == original.file_meta.TransferSyntaxUID
    assert written.PixelData == original.PixelData and written.SOPInstanceUID == original.SOPInstanceUID
    assert (tmp_path / "blobs" / "t" / "a.dcm").read_bytes() == source.read_bytes(), "the stored version is untouched"


def _copy(source: Path, target: Path) -> Path:
    target.write_bytes(source.read_bytes())
    return target
