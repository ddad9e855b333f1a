"""WADO-RS frame lists on the real stack (issue 27 item 3): a list that repeats a frame, names more
frames than the object has, or is too long is refused with 400 and a reason before anything is
read; a long valid list of a real 120-frame file streams (no Content-Length: frames are made as
they are sent) and every frame equals pydicom's, decoded or as stored."""

from __future__ import annotations

import random
import uuid
from pathlib import Path

import numpy as np
import pytest
import requests
from dicomweb_client.api import DICOMwebClient
from pydicom import dcmread
from pydicom.encaps import get_frame
from pydicom.pixels import pixel_array

from archive.pixels.frame_list import MAX_FRAME_LIST_CHARS
from tests.auth import auth_headers

TENANT = "framelists"
DATA = ("pydicom-data", "data_store", "data")
CINE = "color3d_jpeg_baseline.dcm"  # 120 JPEG baseline frames, 480 x 640 YBR
SMALL = "emri_small_big_endian.dcm"  # 10 native frames, 64 x 64, 16 bits


def _stow(stack, path: Path) -> str:
    boundary = uuid.uuid4().hex
    body = (
        f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode()
        + path.read_bytes()
        + f"\r\n--{boundary}--\r\n".encode()
    )
    response = requests.post(
        stack.url("/dicomweb/studies"),
        data=body,
        timeout=120,
        headers={**auth_headers(TENANT), "Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}'},
    )
    assert response.status_code == 200, response.text
    h = dcmread(path, stop_before_pixels=True)
    return f"/dicomweb/studies/{h.StudyInstanceUID}/series/{h.SeriesInstanceUID}/instances/{h.SOPInstanceUID}"


@pytest.fixture(scope="module")
def stored(stack, data_dir) -> dict[str, tuple[Path, str]]:
    """File name -> (the original file, its instance path), stored in this module's tenant."""
    out = {}
    for name in (CINE, SMALL):
        path = data_dir.joinpath(*DATA, name)
        out[name] = (path, _stow(stack, path))
    return out


def _frames(stack, instance: str, numbers: str) -> requests.Response:
    return requests.get(stack.url(f"{instance}/frames/{numbers}"), headers=auth_headers(TENANT), timeout=60)


@pytest.mark.parametrize(
    "numbers, words",
    [
        ("1,1", "frame 1 is listed more than once"),
        (",".join(["1"] * 300), "frame 1 is listed more than once"),  # the 599-character list that made 300 copies
        ("3,4,3", "frame 3 is listed more than once"),
        (",".join(str(n) for n in range(1, 12)), "11 frame numbers given; the instance has 10 frame(s)"),
        (",".join(str(n) for n in range(1, 2000)), f"at most {MAX_FRAME_LIST_CHARS} are taken"),
    ],
)
def test_a_frame_list_that_repeats_or_overreaches_is_400_with_a_reason(stack, stored, numbers, words):
    response = _frames(stack, stored[SMALL][1], numbers)
    assert response.status_code == 400, (response.status_code, response.text[:200])
    assert words in response.json()["error"]


def test_a_frame_beyond_the_object_is_still_404(stack, stored):
    response = _frames(stack, stored[SMALL][1], "2,11")
    assert response.status_code == 404 and "frame 11 does not exist" in response.json()["error"]


def _shuffled_every_frame(count: int) -> list[int]:
    numbers = list(range(1, count + 1))
    random.Random(27).shuffle(numbers)  # out of order: each frame is found on its own
    return numbers


def test_every_frame_of_a_real_cine_streams_decoded_as_pydicom_decodes_it(stack, stored):
    path, instance = stored[CINE]
    ds = dcmread(path)
    numbers = _shuffled_every_frame(int(ds.NumberOfFrames))
    url = stack.url(f"{instance}/frames/{','.join(map(str, numbers))}")
    head = requests.get(
        url,
        headers={**auth_headers(TENANT), "Accept": "multipart/related; type=application/octet-stream"},
        timeout=120,
        stream=True,
    )
    assert head.status_code == 200
    assert "content-length" not in head.headers  # streamed: the body was not joined before it was sent
    head.close()
    client = DICOMwebClient(url=stack.url("/dicomweb"), headers=auth_headers(TENANT))
    got = client.retrieve_instance_frames(
        str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID), str(ds.SOPInstanceUID), frame_numbers=numbers
    )
    assert len(got) == len(numbers)
    for n, frame in zip(numbers, got, strict=True):
        expected = np.ascontiguousarray(pixel_array(ds, index=n - 1, raw=True)).tobytes()
        assert bytes(frame) == expected, f"frame {n}"


def test_every_frame_of_a_real_cine_streams_as_stored(stack, stored):
    path, instance = stored[CINE]
    ds = dcmread(path)
    numbers = _shuffled_every_frame(int(ds.NumberOfFrames))
    client = DICOMwebClient(url=stack.url("/dicomweb"), headers=auth_headers(TENANT))
    got = client.retrieve_instance_frames(
        str(ds.StudyInstanceUID),
        str(ds.SeriesInstanceUID),
        str(ds.SOPInstanceUID),
        frame_numbers=numbers,
        media_types=(("image/jpeg", "1.2.840.10008.1.2.4.50"),),
    )
    expected = [get_frame(ds.PixelData, n - 1, number_of_frames=len(numbers)) for n in numbers]
    assert [bytes(g) for g in got] == expected
