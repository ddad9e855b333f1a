"""The worker's read of a stored object for its DICOM JSON (archive/dicom/header.stored_dataset):
one walk gives pydicom's raw elements, where it used to be dcmread plus a second walk for the Pixel
Data's VR. The JSON must be the one dcmread's dataset gives, for every real file from scanners and
toolkits, sequences of undefined length included."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.dataelem import RawDataElement

from archive.dicom.dicom_json import dataset_json, file_json
from archive.dicom.header import InvalidObject, pixel_data_vr, stored_dataset
from tests.unit.test_header_walk import _real_files

BASE = "/dicomweb/studies/1/series/2/instances/3"


def _as_dcmread_gives(path: Path) -> tuple[dict, str | None] | None:
    try:
        ds = dcmread(path, stop_before_pixels=True)
        return dataset_json(ds, BASE), pixel_data_vr(path)
    except Exception:  # noqa: BLE001 - not an object this archive would have stored
        return None


@pytest.mark.filterwarnings("ignore")
def test_the_walk_gives_the_json_dcmread_gives_for_every_real_file(data_dir: Path) -> None:
    walked, undefined_sequences = 0, 0
    for path in _real_files(data_dir):
        expected = _as_dcmread_gives(path)
        if expected is None:
            continue
        try:
            ds, vr = stored_dataset(path)
        except InvalidObject:
            continue  # file_json reads it with pydicom, as before
        raw = [ds.get_item(tag) for tag in ds.keys()]  # before dataset_json converts them
        assert (dataset_json(ds, BASE), vr) == expected, path
        if getattr(ds, "file_meta", None) is None:  # the walk's own dataset, not pydicom's parse
            walked += 1
            undefined_sequences += any(isinstance(e, RawDataElement) and e.length == 0xFFFFFFFF for e in raw)
    assert walked > 900, f"only {walked} files were read by the walk"
    assert undefined_sequences > 10, "sequences of undefined length came this way too"


@pytest.mark.filterwarnings("ignore")
def test_file_json_names_the_pixel_data_by_its_vr(data_dir: Path) -> None:
    for path in sorted((data_dir / "dcm_qa_ts").rglob("*.dcm")):
        document = file_json(path, BASE)
        assert document["7FE00010"] == {"vr": pixel_data_vr(path), "BulkDataURI": f"{BASE}/bulkdata/7FE00010"}
