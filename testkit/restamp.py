"""Real files as a new study: new Study, Series and SOP Instance UIDs (series kept apart as they
were), other attributes set as asked, so a test or benchmark can store the same scanner data many
times over without colliding with itself."""

from __future__ import annotations

import io
from pathlib import Path

from pydicom import dcmread
from pydicom.uid import generate_uid


def as_new_study(files: list[Path], **attributes: str) -> list[bytes]:
    """Each file's bytes, restamped into one new study; `attributes` by keyword (PatientID=...)."""
    study, series, out = generate_uid(), {}, []
    for path in files:
        ds = dcmread(path)
        ds.StudyInstanceUID = study
        for keyword, value in attributes.items():
            setattr(ds, keyword, value)
        ds.SeriesInstanceUID = series.setdefault(str(ds.SeriesInstanceUID), generate_uid())
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        buffer = io.BytesIO()
        ds.save_as(buffer, enforce_file_format=True)
        out.append(buffer.getvalue())
    return out
