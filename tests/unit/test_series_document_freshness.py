"""When WADO-RS may serve a series' generated document instead of building the answer: only while
the document shows the series as it is now, written in the current JSON format."""

from __future__ import annotations

import dataclasses

import pytest

from archive.dicom.dicom_json import DOCUMENT_FORMAT
from archive.index.reads import SeriesMetadata

FRESH = SeriesMetadata(
    series_uid="1.2.3",
    study_date="20240101",
    metadata_key="t/x/series-metadata.json.gz",
    metadata_state="ready",
    version=7,
    metadata_version=7,
    metadata_instances=3,
    metadata_format=DOCUMENT_FORMAT,
    live_count=3,
)


def test_a_document_of_the_series_as_it_is_now_is_served() -> None:
    assert FRESH.document_fresh
    assert dataclasses.replace(FRESH, metadata_state="partial").document_fresh  # some instances left out, with why


@pytest.mark.parametrize(
    "change",
    [
        {"metadata_format": None},  # written before formats existed
        {"metadata_format": DOCUMENT_FORMAT - 1},
        {"metadata_format": DOCUMENT_FORMAT + 1},  # a newer archive's, read by an older replica during an upgrade
        {"version": 8},  # replaced, repaired or deleted in since
        {"live_count": 4},  # stored in since
        {"metadata_key": None},
        {"metadata_state": "failed"},
    ],
)
def test_anything_else_is_built_from_the_files(change: dict) -> None:
    assert not dataclasses.replace(FRESH, **change).document_fresh
