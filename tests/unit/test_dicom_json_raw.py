"""The raw fast path of DICOM JSON (plain values, small binaries inline and large ones by
reference, sequence items element by element) gives what pydicom gives, element for element, over every real
file we have (the shared data from scanners and toolkits, and pydicom's own test files: Japanese,
Greek, Russian character sets, implicit and big-endian syntaxes, private tags, odd values)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pydicom.data
import pytest
from pydicom import dcmread
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.tag import Tag

from archive.dicom.dicom_json import json_elements
from archive.dicom.dicom_json_raw import raw_json

THRESHOLD = 1024


def _bulk(element: Any) -> str:
    return f"bulkdata/{element.tag:08X}"


def _by_pydicom(ds: Dataset) -> dict[str, Any]:
    """The reference: pydicom's conversion and to_json_dict for every element, as before the fast path."""
    out = {}
    for tag in ds.keys():
        try:
            out[f"{tag:08X}"] = ds[tag].to_json_dict(_bulk, THRESHOLD)
        except Exception:  # noqa: BLE001 - left out on both sides
            continue
    return out


def _real_files(data_dir: Path) -> list[Path]:
    shared = [
        p
        for p in sorted(data_dir.rglob("*"))
        if p.is_file()
        and p.suffix.lower()
        not in (".md", ".txt", ".json", ".nii", ".gz", ".bval", ".bvec", ".png", ".jpg", ".py", ".csv", ".tsv", ".zip")
    ]
    bundled = Path(pydicom.data.__file__).parent / "test_files"  # not get_testdata_files: it tries the network
    return shared + sorted(p for p in bundled.rglob("*") if p.is_file())


def _read(path: Path) -> Dataset | None:
    try:
        return dcmread(path, stop_before_pixels=True)
    except Exception:  # noqa: BLE001 - not DICOM, or not readable by pydicom: nothing to compare
        return None


def test_fast_path_equals_pydicom_on_every_real_file(data_dir):
    compared = plain = files = 0
    for path in _real_files(data_dir):
        ds = _read(path)
        if ds is None:
            continue
        files += 1
        plain += sum(isinstance(ds.get_item(t), RawDataElement) and raw_json(ds.get_item(t)) is not None for t in ds.keys())
        ours = json.dumps(
            json_elements(ds, THRESHOLD, lambda item_path: _bulk), sort_keys=True
        )  # URIs by tag alone, as pydicom's
        reference = json.dumps(_by_pydicom(_read(path)), sort_keys=True)
        assert ours == reference, f"{path}: DICOM JSON differs from pydicom's"
        compared += len(ds)
    print(f"{files} files, {plain} of {compared} elements on the fast path")
    assert files > 300 and plain > compared * 0.6, f"{files} files, {plain} of {compared} elements on the fast path"


@pytest.mark.parametrize(
    ("vr", "value", "expected"),
    [
        ("DS", b" 1.50\\-2e3 ", {"vr": "DS", "Value": [1.5, -2000.0]}),
        ("IS", b"+12 ", {"vr": "IS", "Value": [12]}),
        ("CS", b"ORIGINAL\\PRIMARY\\ ", {"vr": "CS", "Value": ["ORIGINAL", "PRIMARY", ""]}),  # as pydicom splits it
        ("LO", b"a \\b\x00", {"vr": "LO", "Value": ["a", "b"]}),
        ("LT", b"one\\line ", {"vr": "LT", "Value": ["one\\line"]}),
        ("US", b"\x01\x00\x02\x00", {"vr": "US", "Value": [1, 2]}),
        ("SH", b"  ", {"vr": "SH"}),
        ("DS", b"P1: ", None),  # not a plain number: pydicom decides (and may leave it out)
        ("DS", b"1\\\\2", None),  # an empty value among numbers
        ("DS", b"1e999", None),  # overflows to infinity, which JSON cannot carry
        ("IS", b"9" * 5000, None),  # beyond IS's 12 characters (and Python's int-from-text limit)
        ("US", b"\x01\x00\x02", None),  # not a whole number of values
        ("LO", "Müller".encode("latin-1"), None),  # not ASCII: the character set decides
        ("PN", b"DOE^JOHN\\ROE^JANE ", {"vr": "PN", "Value": [{"Alphabetic": "DOE^JOHN"}, {"Alphabetic": "ROE^JANE"}]}),
        ("PN", b"Yamada^Tarou=\x1b$B;3ED\x1b(B", None),  # component groups in ISO 2022: the character set decides
        ("PN", b"Yamada^Tarou=Ya^Ta", None),  # component groups
        ("PN", b"DOE\\", None),  # an empty name among names
        ("UN", b"\x00\x01", None),
    ],
)
def test_each_case_is_plain_or_left_to_pydicom(vr, value, expected):
    raw = RawDataElement(Tag(0x00091001 if vr == "UN" else 0x00181050), vr, len(value), value, 0, False, True)
    assert raw_json(raw) == expected


def test_implicit_private_and_big_endian_are_left_to_pydicom():
    implicit_private = RawDataElement(Tag(0x00091001), None, 2, b"AB", 0, True, True)
    big_endian = RawDataElement(Tag(0x00280010), "US", 2, b"\x02\x00", 0, False, False)
    implicit_public = RawDataElement(Tag(0x00280010), None, 2, b"\x00\x02", 0, True, True)
    assert raw_json(implicit_private) is None and raw_json(big_endian) is None
    assert raw_json(implicit_public) == {"vr": "US", "Value": [512]}


def test_metadata_names_pixel_data_as_the_file_holds_it(data_dir, tmp_path):
    """Present or not, and its VR, read from each real file the archive accepts (before: guessed from
    Rows and BitsAllocated, wrong on 34 test files: 8-bit OW, implicit VR, big endian 16-bit OB)."""
    from archive.dicom.dicom_json import file_json
    from archive.dicom.header import InvalidObject, read_header

    checked = with_pixels = 0
    for path in _real_files(data_dir):
        try:
            read_header(path)
            whole = dcmread(path, defer_size=1024)
        except (InvalidObject, Exception):  # noqa: BLE001 - refused at receipt, or not DICOM: never gets metadata
            continue
        expected = whole["PixelData"].VR if "PixelData" in whole else None
        got = file_json(path, "b").get("7FE00010")
        assert (got or {}).get("vr") == expected, path
        checked += 1
        with_pixels += expected is not None
    assert checked > 800 and with_pixels > 700, (checked, with_pixels)
