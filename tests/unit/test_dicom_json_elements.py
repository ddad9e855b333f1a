"""DICOM JSON of a real object with a value pydicom cannot write, without touching pydicom's
process-wide reading mode (which receipts in other threads depend on)."""

from __future__ import annotations

import math
import struct
import threading

from pydicom import config, dcmread
from pydicom.data import get_testdata_file
from pydicom.dataelem import RawDataElement
from pydicom.tag import Tag

from archive.dicom.dicom_json import json_elements


def test_an_unwritable_value_is_left_out_and_the_reading_mode_is_untouched():
    ds = dcmread(get_testdata_file("CT_small.dcm"), stop_before_pixels=True)
    # SpatialResolution as a file can carry it: not a decimal string
    ds[0x00181050] = RawDataElement(Tag(0x00181050), "DS", 4, b"P1: ", 0, False, True)
    modes: list[int] = []
    stop = threading.Event()

    def watch() -> None:  # what another thread sees while the conversion runs
        while not stop.is_set():
            modes.append(config.settings.reading_validation_mode)

    watcher = threading.Thread(target=watch)
    before = config.settings.reading_validation_mode
    watcher.start()
    try:
        for _ in range(50):
            out = json_elements(ds, bulk_data_threshold=1024)
    finally:
        stop.set()
        watcher.join()
    assert "00181050" not in out and out["00100010"]["Value"] == [{"Alphabetic": "CompressedSamples^CT1"}]
    assert config.settings.reading_validation_mode == before and set(modes) <= {before}


def test_nan_and_infinity_are_written_as_null_so_the_document_stays_json():
    """A browser's JSON.parse refuses a whole series document for one bare NaN."""
    import json

    ds = dcmread(get_testdata_file("CT_small.dcm"), stop_before_pixels=True)
    ds[0x00181050] = RawDataElement(Tag(0x00181050), "DS", 8, b"NaN\\1.5 ", 0, False, True)  # SpatialResolution
    ds[0x00189087] = RawDataElement(Tag(0x00189087), "FD", 16, struct.pack("<2d", math.inf, 2.0), 0, False, True)
    ds[0x00189089] = RawDataElement(Tag(0x00189089), "FD", 8, struct.pack("<d", 3.0), 0, False, True)
    out = json.loads(json.dumps(json_elements(ds, bulk_data_threshold=1024), allow_nan=False))
    assert out["00181050"]["Value"] == [None, 1.5]
    assert out["00189087"]["Value"] == [None, 2.0]
    assert out["00189089"]["Value"] == [3.0]


def test_a_lut_descriptor_stored_as_ss_counts_its_entries_as_pydicom_does():
    """The first value is the entry count, unsigned whatever the VR (PS3.3 C.11.1.1): -32768 is 32768."""
    ds = dcmread(get_testdata_file("CT_small.dcm"), stop_before_pixels=True)
    ds[0x00281101] = RawDataElement(Tag(0x00281101), "SS", 6, struct.pack("<3h", -32768, 0, 16), 0, False, True)
    expected = dcmread(get_testdata_file("CT_small.dcm"), stop_before_pixels=True)
    expected[0x00281101] = RawDataElement(Tag(0x00281101), "SS", 6, struct.pack("<3h", -32768, 0, 16), 0, False, True)
    assert json_elements(ds, bulk_data_threshold=1024)["00281101"] == expected[0x00281101].to_json_dict(None, 1024)
    assert json_elements(ds, bulk_data_threshold=1024)["00281101"]["Value"] == [32768, 0, 16]
