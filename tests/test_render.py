"""Rendering: the lookup-table path gives exactly what transforming every pixel gives, and over
HTTP every decode goes through the replica's decode pool, which refuses a hostile object with a
reason while the replica keeps serving."""

from __future__ import annotations

import io
import uuid

import numpy as np
import pytest
import requests
from PIL import Image
from pydicom import dcmread
from pydicom.encaps import get_frame
from pydicom.pixels import apply_modality_lut, pixel_array

from archive.pixels.render import _grey_levels, _to_8bit
from tests.auth import auth_headers
from tests.pixel_bombs import J2K_SOURCE, j2k_declaring

# CT with rescale slope/intercept and MR (two encodings each), CR (MONOCHROME1), big-endian MR,
# and the LUT-sequence files that must take the direct path
FILES = [
    "693_UNCR.dcm",
    "693_UNCI.dcm",
    "MR2_UNCR.dcm",
    "RG1_UNCR.dcm",
    "RG3_UNCR.dcm",
    "emri_small_big_endian.dcm",
    "MR2_UNCI.dcm",
    "mlut_18.dcm",
    "vlut_04.dcm",
]


@pytest.mark.parametrize("name", FILES)
@pytest.mark.parametrize("window", [None, (40.0, 400.0)])
def test_lookup_table_equals_per_pixel_transform(data_dir, name, window):
    found = sorted(data_dir.rglob(name))
    assert found, f"{name} is missing from the shared data"
    ds = dcmread(found[0])
    array = pixel_array(ds, index=0)
    expected = _to_8bit(apply_modality_lut(array, ds), window, ds)
    actual = _grey_levels(array, ds, window)
    assert len(np.unique(array)) > 8  # a real image: a flat one would match trivially
    assert actual.dtype == np.uint8 and np.array_equal(actual, expected)


# through the HTTP routes of the running stack: decoding happens in the replica's decode pool --------

TENANT = "render"
NATIVE = "1.2.840.10008.1.2.1"
DECODED_FRAME = f"multipart/related; type=application/octet-stream; transfer-syntax={NATIVE}"
DECOMPRESSED = f'multipart/related; type="application/dicom"; transfer-syntax={NATIVE}'


def _stow(stack, payloads: list[bytes]) -> None:
    boundary = uuid.uuid4().hex
    body = b"".join(f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode() + p + b"\r\n" for p in payloads)
    response = requests.post(
        stack.url("/dicomweb/studies"),
        data=body + f"--{boundary}--\r\n".encode(),
        timeout=120,
        headers={**auth_headers(TENANT), "Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}'},
    )
    assert response.status_code == 200, response.text


def _instance_url(stack, payload: bytes) -> str:
    h = dcmread(io.BytesIO(payload), stop_before_pixels=True)
    return stack.url(f"/dicomweb/studies/{h.StudyInstanceUID}/series/{h.SeriesInstanceUID}/instances/{h.SOPInstanceUID}")


@pytest.fixture(scope="module")
def objects(stack, data_dir) -> dict[str, bytes]:
    """A real JPEG 2000 MR, and the same MR whose codestream declares 60000 x 60000 pixels (the
    header still says 1024 x 1024, so receipt takes it), each under its own UIDs."""
    source = data_dir.joinpath(*J2K_SOURCE)
    chosen = {"real": j2k_declaring(source, 1024, tile=0), "bomb": j2k_declaring(source, 60000)}
    _stow(stack, list(chosen.values()))
    return chosen


def _get(url: str, accept: str, **params: str) -> requests.Response:
    return requests.get(url, params=params, headers={**auth_headers(TENANT), "Accept": accept}, timeout=120)


def test_a_real_compressed_file_renders_and_decodes_through_the_pool(stack, objects):
    url, original = _instance_url(stack, objects["real"]), dcmread(io.BytesIO(objects["real"]))
    image = _get(url + "/rendered", "image/jpeg")
    assert image.status_code == 200 and Image.open(io.BytesIO(image.content)).size == (1024, 1024)
    thumbnail = _get(url + "/thumbnail", "image/png")
    assert thumbnail.status_code == 200 and Image.open(io.BytesIO(thumbnail.content)).size == (128, 128)
    frame = _get(url + "/frames/1", DECODED_FRAME)
    assert frame.status_code == 200
    assert np.ascontiguousarray(pixel_array(original, index=0, raw=True)).tobytes() in frame.content
    whole = _get(url, DECOMPRESSED)
    assert whole.status_code == 200
    part = whole.content.split(b"\r\n\r\n", 1)[1]
    copy = dcmread(io.BytesIO(part[: part.rindex(b"\r\n--")]))
    assert copy.file_meta.TransferSyntaxUID == NATIVE and np.array_equal(copy.pixel_array, original.pixel_array)


@pytest.mark.parametrize(
    "path, accept",
    [
        ("/rendered", "image/jpeg"),
        ("/thumbnail", "image/jpeg"),
        ("/frames/1/rendered", "image/png"),
        ("/frames/1", DECODED_FRAME),
        ("", DECOMPRESSED),
    ],
)
def test_a_codestream_larger_than_its_header_is_refused_and_the_replica_serves_on(stack, objects, path, accept):
    """Refused by its SIZ marker before any codec runs (archive/pixels/codestream.py): the object is broken."""
    response = _get(_instance_url(stack, objects["bomb"]) + path, accept)
    assert response.status_code == 422, response.text
    assert "SIZ marker describes 60000 x 60000 pixels" in response.json()["error"]
    again = _get(_instance_url(stack, objects["real"]) + "/rendered", "image/jpeg")
    assert again.status_code == 200 and again.content.startswith(b"\xff\xd8")


def test_wado_uri_refuses_the_bomb_too(stack, objects):
    h = dcmread(io.BytesIO(objects["bomb"]), stop_before_pixels=True)
    response = requests.get(
        stack.url("/dicomweb/wado"),
        headers=auth_headers(TENANT),
        timeout=120,
        params={
            "requestType": "WADO",
            "studyUID": str(h.StudyInstanceUID),
            "seriesUID": str(h.SeriesInstanceUID),
            "objectUID": str(h.SOPInstanceUID),
            "contentType": "image/jpeg",
        },
    )
    assert response.status_code == 422 and "SIZ marker describes 60000 x 60000" in response.json()["error"]


def test_frames_as_stored_never_reach_the_pool(stack, objects):
    """The fast path: the bomb's codestream goes out untouched when the client takes it as is."""
    response = _get(_instance_url(stack, objects["bomb"]) + "/frames/1", "multipart/related; type=image/jp2")
    assert response.status_code == 200
    assert get_frame(dcmread(io.BytesIO(objects["bomb"])).PixelData, 0, number_of_frames=1) in response.content
