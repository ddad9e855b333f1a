"""IOCM rejection notes as a Change Requester makes them: Key Object Selection documents built by
highdicom over real objects, titled with a PS3.16 CID 7011 code, saved as Part-10 files a real
sender (storescu, STOW-RS) can send."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import highdicom
from highdicom.ko import KeyObjectSelection, KeyObjectSelectionDocument
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code

QUALITY = codes.DCM.RejectedForQualityReasons  # 113001
PATIENT_SAFETY = codes.DCM.RejectedForPatientSafetyReasons  # 113037
WORKLIST_ENTRY = codes.DCM.IncorrectModalityWorklistEntry  # 113038
RETENTION_EXPIRED = codes.DCM.DataRetentionPolicyExpired  # 113039


def rejection_note(rejected: Iterable[Path], title: Code = QUALITY) -> Dataset:
    """A KOS in the rejected objects' study that withdraws them."""
    evidence = [dcmread(path, stop_before_pixels=True) for path in rejected]
    return KeyObjectSelectionDocument(
        evidence=evidence,
        content=KeyObjectSelection(document_title=title, referenced_objects=evidence),
        series_instance_uid=highdicom.UID(),
        series_number=999,
        sop_instance_uid=highdicom.UID(),
        instance_number=1,
        manufacturer="dicomflow tests",
    )


def write_rejection_note(rejected: Iterable[Path], out: Path, title: Code = QUALITY) -> Path:
    note = rejection_note(rejected, title)
    note.save_as(out, enforce_file_format=True)
    return out
