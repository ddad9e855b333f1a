"""DICOM JSON of a real object with a value pydicom cannot write, without touching pydicom's
process-wide reading mode (which receipts in other threads depend on)."""

from __future__ import annotations

import threading

from pydicom import config, dcmread
from pydicom.data import get_testdata_file
from pydicom.dataelem import RawDataElement
from pydicom.tag import Tag

from archive.dicom_json import json_elements


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
