"""Lossless compression (archive/lifecycle/compress.py) of real objects in both codecs: the same
object (SOP Instance UID kept), pixels identical when decoded, smaller; what cannot or need not be
compressed is left alone."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from pydicom import dcmread

from archive.lifecycle.compress import NotCompressible, write_compressed
from archive.lifecycle.rules import SYNTAXES

PYDICOM = ("pydicom-data", "data_store", "data")
FILES = [
    "693_UNCR.dcm",
    "eCT_Supplemental.dcm",
    "SC_rgb.dcm",
    "MR2_UNCR.dcm",
    "US1_UNCR.dcm",
    "SC_rgb_expb_16bit.dcm",
    "emri_small_big_endian.dcm",
]


@pytest.mark.parametrize("syntax", sorted(SYNTAXES))
@pytest.mark.parametrize("name", FILES)
def test_a_compressed_object_is_the_same_object_with_the_same_pixels(
    data_dir: Path, tmp_path: Path, name: str, syntax: str
) -> None:
    source = data_dir.joinpath(*PYDICOM, name)
    target = tmp_path / "out.dcm"
    size = write_compressed(str(source), str(target), SYNTAXES[syntax])
    original, written = dcmread(source), dcmread(target)
    assert str(written.file_meta.TransferSyntaxUID) == SYNTAXES[syntax]
    assert (
        written.SOPInstanceUID == original.SOPInstanceUID
        and written.file_meta.MediaStorageSOPInstanceUID == original.SOPInstanceUID
    )
    assert np.array_equal(written.pixel_array, original.pixel_array)
    assert size == target.stat().st_size < source.stat().st_size


def test_what_need_not_or_cannot_be_compressed_is_left_alone(data_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(NotCompressible, match="already compressed"):
        write_compressed(str(data_dir.joinpath(*PYDICOM, "693_J2KR.dcm")), str(tmp_path / "a.dcm"), SYNTAXES["jpegls-lossless"])
    report = next(p for p in (data_dir / "dcm_qa_nih").rglob("*") if p.is_file())
    ds = dcmread(report)
    del ds.PixelData
    ds.save_as(tmp_path / "nopixels.dcm")
    with pytest.raises(NotCompressible, match="no Pixel Data"):
        write_compressed(str(tmp_path / "nopixels.dcm"), str(tmp_path / "b.dcm"), SYNTAXES["jpeg2000-lossless"])
