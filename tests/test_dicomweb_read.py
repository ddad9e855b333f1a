"""The read side with real clients: dicomweb-client for QIDO-RS / WADO-RS, raw HTTP for what OHIF sends."""

from __future__ import annotations

import gzip
import io
import json
import re
from pathlib import Path

import numpy as np
import pydicom
import pytest
import requests
from dicomweb_client.api import DICOMwebClient
from PIL import Image
from pydicom import dcmread
from pydicom.encaps import get_frame
from pydicom.pixels import pixel_array
from temporalio.client import WorkflowExecutionStatus

from testkit.temporal_waits import wait_completed
from tests.auth import auth_headers, bearer
from tests.conftest import OHIF_ORIGIN, run

TENANT = "readside"
CHARSETS = Path(pydicom.__file__).parent / "data" / "charset_files"
PYDICOM_DATA = ("pydicom-data", "data_store", "data")
EXTRA = [
    "SC_rgb.dcm",
    "color-pl.dcm",
    "emri_small.dcm",
    "OBXXXX1A_rle_2frame.dcm",
    "RG1_UNCR.dcm",
    "US1_J2KR.dcm",
    "color3d_jpeg_baseline.dcm",
]
JAPANESE = ["chrH31.dcm", "chrX1.dcm", "chrRuss.dcm", "chrGreek.dcm"]


def files(data_dir: Path) -> list[Path]:
    chosen = sorted((data_dir / "dcm_qa_ts").rglob("*.dcm")) + sorted((data_dir / "dcm_qa_nih").rglob("*.dcm"))
    chosen += [data_dir.joinpath(*PYDICOM_DATA, name) for name in EXTRA]
    return chosen + [CHARSETS / name for name in JAPANESE]


@pytest.fixture(scope="module")
def client(stack) -> DICOMwebClient:
    return DICOMwebClient(url=stack.url("/dicomweb"), headers=auth_headers(TENANT))


@pytest.fixture(scope="module")
def stored(stack, client, data_dir) -> dict[str, Path]:
    """STOW the chosen real files into their own tenant; SOP Instance UID -> original file."""
    originals = {}
    for path in files(data_dir):
        ds = dcmread(path)
        originals.setdefault(str(ds.SOPInstanceUID), path)
    for path in originals.values():
        client.store_instances(datasets=[dcmread(path)])
    studies = {str(dcmread(p, stop_before_pixels=True).StudyInstanceUID) for p in originals.values()}
    statuses = run(wait_completed(stack.settings, [f"study:{TENANT}:{s}" for s in studies], timeout=180))
    assert set(statuses.values()) == {WorkflowExecutionStatus.COMPLETED}
    return originals


def header(path: Path):
    return dcmread(path, stop_before_pixels=True)


def values(results: list[dict], tag: str) -> list:
    return [r[tag]["Value"][0] for r in results if "Value" in r.get(tag, {})]


# QIDO-RS ---------------------------------------------------------------------------------------


def test_every_study_is_found(client, stored):
    expected = {str(header(p).StudyInstanceUID) for p in stored.values()}
    assert set(values(client.search_for_studies(), "0020000D")) == expected


def test_study_counts_and_modalities(client, stored, data_dir):
    nih = header(next((data_dir / "dcm_qa_nih").rglob("*.dcm")))
    [study] = client.search_for_studies(search_filters={"StudyInstanceUID": str(nih.StudyInstanceUID)})
    assert study["00201206"]["Value"] == [4] and study["00201208"]["Value"] == [8]
    assert study["00080061"]["Value"] == ["MR"]


def test_person_name_matching(client, stored):
    names = {str(header(p).PatientName) for p in stored.values() if header(p).get("PatientName")}
    name = next(n for n in sorted(names) if n.isascii() and "^" in n)
    exact = client.search_for_studies(search_filters={"PatientName": name.upper()})  # PN is case-insensitive
    assert exact and all(r["00100010"]["Value"][0]["Alphabetic"].upper() == name.upper() for r in exact)
    prefix = client.search_for_studies(search_filters={"PatientName": name[:3].lower() + "*"})
    assert len(prefix) >= len(exact)
    given = name.split("^")[1][:3]
    fuzzy = client.search_for_studies(search_filters={"PatientName": given}, fuzzymatching=True)
    assert any(r["00100010"]["Value"][0]["Alphabetic"] == name for r in fuzzy)


def test_date_ranges_and_uid_lists(client, stored, stack):
    studies = client.search_for_studies()
    dated = sorted(d for d in values(studies, "00080020") if len(d) == 8 and d.isdigit())
    low, high = dated[0], dated[len(dated) // 2]
    in_range = client.search_for_studies(search_filters={"StudyDate": f"{low}-{high}"})
    assert set(values(in_range, "00080020")) == {d for d in dated if low <= d <= high}
    assert set(values(client.search_for_studies(search_filters={"StudyDate": f"-{low}"}), "00080020")) == {low}
    uids = values(studies, "0020000D")[:2]
    for joined in (",".join(uids), "\\".join(uids)):  # the comma form and the backslash form OHIF sends
        response = requests.get(
            stack.url("/dicomweb/studies"), params={"StudyInstanceUID": joined}, headers=auth_headers(TENANT), timeout=30
        )
        assert set(values(response.json(), "0020000D")) == set(uids)


def test_limit_offset_and_warning(client, stored, stack):
    everything = values(client.search_for_studies(), "0020000D")
    response = requests.get(
        stack.url("/dicomweb/studies"), params={"limit": 2, "offset": 1}, headers=auth_headers(TENANT), timeout=30
    )
    assert values(response.json(), "0020000D") == everything[1:3]
    assert "299" in response.headers["Warning"] and "offset=3" in response.headers["Warning"]


def test_includefield_by_keyword_tag_and_all(client, stored, stack):
    by_keyword = client.search_for_studies(fields=["SOPClassesInStudy"])
    assert all("00080062" in r for r in by_keyword)
    everything = requests.get(
        stack.url("/dicomweb/series"), params={"includefield": "all"}, headers=auth_headers(TENANT), timeout=30
    ).json()
    assert all("00100010" in r and "00201209" in r for r in everything)


@pytest.mark.parametrize(
    "params, words",
    [
        ({"StudyDate": "2020-01-01"}, "not a date"),
        ({"StudyInstanceUID": "1.2/abc"}, "not a valid UID"),
        ({"limit": "many"}, "integers"),
        ({"0020000G": "x"}, "not a tag"),
    ],
)
def test_bad_queries_are_400(stack, params, words):
    response = requests.get(stack.url("/dicomweb/studies"), params=params, headers=auth_headers(TENANT), timeout=30)
    assert response.status_code == 400 and words in response.text


def test_unsupported_query_keys_are_ignored_with_a_warning(client, stored, stack):
    """PS3.18 8.3.4: a key the origin server does not support is ignored, not refused; the answer names it."""
    plain = requests.get(stack.url("/dicomweb/studies"), headers=auth_headers(TENANT), timeout=30)
    params = {"NoSuchKeyword": "x", "00091001": "y", "includefield": "00091001", "_": "1700000000"}
    response = requests.get(stack.url("/dicomweb/studies"), params=params, headers=auth_headers(TENANT), timeout=30)
    assert response.status_code == 200, response.text
    assert values(response.json(), "0020000D") == values(plain.json(), "0020000D")
    assert re.fullmatch(
        r'299 127\.0\.0\.1:\d+ "The following query keys were ignored \(not supported\): '
        r'NoSuchKeyword, 00091001, _, includefield=00091001"',
        response.headers["Warning"],
    )


def test_tenants_are_walls(stack, stored):
    sop, path = next(iter(stored.items()))
    h = header(path)
    other = auth_headers("someoneelse")
    assert requests.get(stack.url("/dicomweb/studies"), headers=other, timeout=30).json() == []
    base = f"/dicomweb/studies/{h.StudyInstanceUID}/series/{h.SeriesInstanceUID}/instances/{sop}"
    for path_ in (base, base + "/metadata", base + "/frames/1", base + "/rendered"):
        assert requests.get(stack.url(path_), headers=other, timeout=30).status_code == 404, path_


def test_series_and_instances_of_a_study(client, stored, data_dir):
    nih = [header(p) for p in sorted((data_dir / "dcm_qa_nih").rglob("*.dcm"))]
    study = str(nih[0].StudyInstanceUID)
    series = client.search_for_series(study)
    assert set(values(series, "0020000E")) == {str(h.SeriesInstanceUID) for h in nih}
    assert all(r["00201209"]["Value"] == [2] for r in series)
    one = str(nih[0].SeriesInstanceUID)
    instances = client.search_for_instances(study, one)
    assert set(values(instances, "00080018")) == {str(h.SOPInstanceUID) for h in nih if str(h.SeriesInstanceUID) == one}
    assert all(r["0020000D"]["Value"] == [study] for r in instances)


# WADO-RS -----------------------------------------------------------------------------------------


def test_retrieve_study_series_instance(client, stored, data_dir):
    nih = [header(p) for p in sorted((data_dir / "dcm_qa_nih").rglob("*.dcm"))]
    study, series = str(nih[0].StudyInstanceUID), str(nih[0].SeriesInstanceUID)
    assert {str(d.SOPInstanceUID) for d in client.retrieve_study(study)} == {str(h.SOPInstanceUID) for h in nih}
    assert len(client.retrieve_series(study, series)) == 2
    one = client.retrieve_instance(study, series, str(nih[0].SOPInstanceUID))
    original = dcmread(stored[str(nih[0].SOPInstanceUID)])
    assert one.PixelData == original.PixelData


def test_retrieve_decompressed_when_asked(client, stored, data_dir):
    path = next(
        p for p in (data_dir / "dcm_qa_ts").rglob("*.dcm") if header(p).file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.4.80"
    )
    h = header(path)
    if str(h.SOPInstanceUID) not in stored or stored[str(h.SOPInstanceUID)] != path:
        pytest.skip("the JPEG-LS file shares its SOP Instance UID with another syntax")
    ds = client.retrieve_instance(
        str(h.StudyInstanceUID),
        str(h.SeriesInstanceUID),
        str(h.SOPInstanceUID),
        media_types=(("application/dicom", "1.2.840.10008.1.2.1"),),
    )
    assert ds.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.1"
    assert ds.SOPInstanceUID == h.SOPInstanceUID  # the same object, only re-encoded
    assert np.array_equal(ds.pixel_array, dcmread(path).pixel_array)


def test_series_metadata_is_ps318_json(stack, client, stored, data_dir):
    nih = header(next((data_dir / "dcm_qa_nih").rglob("*.dcm")))
    metadata = client.retrieve_series_metadata(str(nih.StudyInstanceUID), str(nih.SeriesInstanceUID))
    assert len(metadata) == 2
    item = next(m for m in metadata if m["00080018"]["Value"] == [str(nih.SOPInstanceUID)])
    assert isinstance(item["00280010"]["Value"][0], int)  # numbers as numbers
    assert isinstance(item["00180050"]["Value"][0], (int, float))  # DS too
    assert "Alphabetic" in item["00100010"]["Value"][0]
    bulk = item["7FE00010"]["BulkDataURI"]
    assert bulk.startswith(stack.url("/dicomweb/")) and bulk.endswith("/bulkdata/7FE00010")  # https, as the client came
    pixels = client.retrieve_bulkdata(bulk)[0]
    assert pixels == dcmread(stored[str(nih.SOPInstanceUID)]).PixelData
    roundtrip = pydicom.Dataset.from_json(item, bulk_data_uri_handler=lambda *a: b"")
    assert roundtrip.PatientID == nih.PatientID


def test_bulkdata_ranges(stack, stored, data_dir):
    nih = header(next((data_dir / "dcm_qa_nih").rglob("*.dcm")))
    url = stack.url(
        f"/dicomweb/studies/{nih.StudyInstanceUID}/series/{nih.SeriesInstanceUID}/instances/"
        f"{nih.SOPInstanceUID}/bulkdata/7FE00010"
    )
    pixels = dcmread(stored[str(nih.SOPInstanceUID)]).PixelData
    part = requests.get(
        url, headers={**auth_headers(TENANT), "Accept": "application/octet-stream", "Range": "bytes=10-19"}, timeout=30
    )
    assert part.status_code == 206 and part.content == pixels[10:20]
    assert part.headers["Content-Range"] == f"bytes 10-19/{len(pixels)}"
    beyond = requests.get(
        url,
        headers={**auth_headers(TENANT), "Accept": "application/octet-stream", "Range": f"bytes={len(pixels) + 5}-"},
        timeout=30,
    )
    assert beyond.status_code == 416


def test_a_binary_in_a_sequence_item_has_its_own_bulkdata_uri(stack, client, data_dir):
    """A Siemens MR with an Icon Image Sequence: the icon's pixels are not the image's, so their
    BulkDataURI names the item they are in, and that URI serves the icon's bytes."""
    original = dcmread(data_dir.joinpath(*PYDICOM_DATA, "MR-SIEMENS-DICOM-WithOverlays.dcm"))
    client.store_instances(datasets=[original])
    ids = (str(original.StudyInstanceUID), str(original.SeriesInstanceUID), str(original.SOPInstanceUID))
    item = client.retrieve_instance_metadata(*ids)
    icon_uri = item["00880200"]["Value"][0]["7FE00010"]["BulkDataURI"]
    assert icon_uri.endswith("/bulkdata/00880200/0/7FE00010")
    icon = original.IconImageSequence[0].PixelData
    assert client.retrieve_bulkdata(icon_uri)[0] == icon
    assert client.retrieve_bulkdata(item["7FE00010"]["BulkDataURI"])[0] == original.PixelData != icon
    octets = {**auth_headers(TENANT), "Accept": "application/octet-stream"}
    assert requests.get(icon_uri.replace("/0/7FE00010", "/1/7FE00010"), headers=octets, timeout=30).status_code == 404
    refused = requests.get(icon_uri.replace("/0/", "/x/"), headers=octets, timeout=30)
    assert refused.status_code == 400 and "item index" in refused.text


def test_character_sets_decoded(client, stored):
    """Every charset file is read back (none skipped), and each name group is compared whether or
    not the original has it: a group the original lacks must not appear either."""
    checked = {}
    for name in JAPANESE:
        original = dcmread(CHARSETS / name, stop_before_pixels=True)
        assert str(original.SOPInstanceUID) in stored, f"{name} was not stored"
        item = client.retrieve_instance_metadata(
            str(original.StudyInstanceUID), str(original.SeriesInstanceUID), str(original.SOPInstanceUID)
        )
        name_json = item["00100010"]["Value"][0]
        expected = original.PatientName
        groups = {"Alphabetic": expected.alphabetic, "Ideographic": expected.ideographic, "Phonetic": expected.phonetic}
        assert {group: name_json.get(group, "") for group in groups} == groups, name
        checked[name] = [group for group, value in groups.items() if value]
    assert len(checked) == len(JAPANESE) == 4
    # the set covers what it is here for: ideographic and phonetic groups, and non-Latin alphabetic ones
    assert any("Ideographic" in groups for groups in checked.values())
    assert any("Phonetic" in groups for groups in checked.values())
    assert all("Alphabetic" in groups for groups in checked.values())


def test_metadata_etag_and_gzip(stack, stored, data_dir):
    nih = header(next((data_dir / "dcm_qa_nih").rglob("*.dcm")))
    url = stack.url(f"/dicomweb/studies/{nih.StudyInstanceUID}/metadata")
    first = requests.get(url, headers={**auth_headers(TENANT), "Accept-Encoding": "gzip"}, timeout=30, stream=True)
    raw = first.raw.read()
    assert first.headers["Content-Encoding"] == "gzip" and len(json.loads(gzip.decompress(raw))) == 8
    again = requests.get(url, headers={**auth_headers(TENANT), "If-None-Match": first.headers["ETag"]}, timeout=30)
    assert again.status_code == 304


def _pydicom_frames(path: Path) -> list[bytes]:
    """pydicom's decode of each frame, laid out as WADO-RS sends it: little endian, and colour-by-plane
    when a native object is stored that way (PlanarConfiguration 1)."""
    ds = dcmread(path)
    planar = not ds.file_meta.TransferSyntaxUID.is_compressed and ds.get("PlanarConfiguration") == 1
    out = []
    for i in range(int(ds.get("NumberOfFrames", 1) or 1)):
        array = pixel_array(ds, index=i, raw=True)
        if planar:
            array = array.transpose(2, 0, 1)
        out.append(np.ascontiguousarray(array).astype(array.dtype.newbyteorder("<")).tobytes())
    return out


def test_frames_equal_pydicom_decode_for_every_syntax(client, stored):
    checked = set()
    for sop, path in stored.items():
        h = header(path)
        if "Rows" not in h or path.parent == CHARSETS:
            continue
        expected = _pydicom_frames(path)
        numbers = list(range(1, len(expected) + 1))
        got = client.retrieve_instance_frames(str(h.StudyInstanceUID), str(h.SeriesInstanceUID), sop, frame_numbers=numbers)
        assert [bytes(g) for g in got] == expected, path.name
        checked.add(str(h.file_meta.TransferSyntaxUID))
    assert {"1.2.840.10008.1.2.4.80", "1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.5", "1.2.840.10008.1.2.4.70"} <= checked


def test_frames_as_stored_with_transfer_syntax_star(stack, stored):
    sop, path = next((s, p) for s, p in stored.items() if p.name == "OBXXXX1A_rle_2frame.dcm")
    h = header(path)
    url = stack.url(f"/dicomweb/studies/{h.StudyInstanceUID}/series/{h.SeriesInstanceUID}/instances/{sop}/frames/2")
    response = requests.get(
        url,
        headers={**auth_headers(TENANT), "Accept": "multipart/related; type=application/octet-stream; transfer-syntax=*"},
        timeout=30,
    )
    assert response.status_code == 200 and "1.2.840.10008.1.2.5" in response.headers["content-type"]
    assert get_frame(dcmread(path).PixelData, 1, number_of_frames=2) in response.content


def test_missing_frame_is_404(stack, stored):
    sop, path = next(iter(stored.items()))
    h = header(path)
    url = stack.url(f"/dicomweb/studies/{h.StudyInstanceUID}/series/{h.SeriesInstanceUID}/instances/{sop}/frames/999")
    assert requests.get(url, headers=auth_headers(TENANT), timeout=30).status_code == 404


def _rendered(client, path: Path, **params) -> Image.Image:
    h = header(path)
    data = client.retrieve_instance_rendered(
        str(h.StudyInstanceUID),
        str(h.SeriesInstanceUID),
        str(h.SOPInstanceUID),
        media_types=("image/png",),
        params=params or None,
    )
    return Image.open(io.BytesIO(data))


def test_rendered_rgb_is_exact(client, stored, data_dir):
    path = data_dir.joinpath(*PYDICOM_DATA, "SC_rgb.dcm")
    assert np.array_equal(np.asarray(_rendered(client, path)), dcmread(path).pixel_array)


def test_rendered_window_matches_a_reference(client, stored, data_dir):
    path = next((data_dir / "dcm_qa_nih").rglob("*.dcm"))
    ds = dcmread(path)
    center, width = 300.0, 600.0
    values = ds.pixel_array.astype(np.float64) * float(ds.get("RescaleSlope", 1)) + float(ds.get("RescaleIntercept", 0))
    reference = ((np.clip(values, center - width / 2, center + width / 2) - (center - width / 2)) * 255 / width).round()
    got = np.asarray(_rendered(client, path, window=f"{center:g},{width:g}")).astype(np.float64)
    assert np.abs(got - reference).max() <= 1


@pytest.mark.parametrize(
    ("params", "reason"),
    [
        ({"viewport": "100"}, "viewport needs a width and a height"),
        ({"viewport": "0,0"}, "viewport needs a width and a height"),
        ({"viewport": "-5,20"}, "viewport needs a width and a height"),
        ({"viewport": "100000,100000"}, "viewport needs a width and a height"),
        ({"window": "40"}, "window needs a center and a positive width"),
        ({"quality": "high"}, "are numbers"),
    ],
)
def test_bad_rendering_parameters_are_400(stack, stored, params, reason):
    sop, path = next((s, p) for s, p in stored.items() if p.name == "SC_rgb.dcm")
    h = header(path)
    url = stack.url(f"/dicomweb/studies/{h.StudyInstanceUID}/series/{h.SeriesInstanceUID}/instances/{sop}/rendered")
    response = requests.get(url, params=params, headers=auth_headers(TENANT), timeout=30)
    assert response.status_code == 400 and reason in response.json()["error"]


def test_rendered_palette_monochrome1_multiframe_jpeg(client, stored, data_dir):
    for name in ("color-pl.dcm", "RG1_UNCR.dcm", "emri_small.dcm", "color3d_jpeg_baseline.dcm", "US1_J2KR.dcm"):
        path = data_dir.joinpath(*PYDICOM_DATA, name)
        image = _rendered(client, path)
        ds = header(path)
        assert image.size == (int(ds.Columns), int(ds.Rows)), name
    mono1 = data_dir.joinpath(*PYDICOM_DATA, "RG1_UNCR.dcm")
    if str(header(mono1).PhotometricInterpretation) == "MONOCHROME1":
        raw = dcmread(mono1).pixel_array
        image = np.asarray(_rendered(client, mono1))
        assert image[np.unravel_index(raw.argmax(), raw.shape)] < image[np.unravel_index(raw.argmin(), raw.shape)]


def test_wado_uri(stack, stored):
    sop, path = next((s, p) for s, p in stored.items() if p.name == "SC_rgb.dcm")
    h = header(path)
    params = {"requestType": "WADO", "studyUID": str(h.StudyInstanceUID), "seriesUID": str(h.SeriesInstanceUID), "objectUID": sop}
    dicom = requests.get(stack.url("/dicomweb/wado"), params=params, headers=auth_headers(TENANT), timeout=30)
    assert dicom.status_code == 200 and dcmread(io.BytesIO(dicom.content)).SOPInstanceUID == sop
    jpeg = requests.get(
        stack.url("/dicomweb/wado"), params={**params, "contentType": "image/jpeg"}, headers=auth_headers(TENANT), timeout=30
    )
    assert jpeg.headers["content-type"] == "image/jpeg" and jpeg.content[:2] == b"\xff\xd8"


def test_ohif_study_list_and_viewer_requests(stack, stored, data_dir):
    """The requests OHIF v3 makes to list studies and open one, with its preflight: only
    `Authorization` and `Accept`, the tenant in the data source's root URL."""
    origin = {"Origin": OHIF_ORIGIN}
    root = f"/tenants/{TENANT}/dicomweb"
    preflight = requests.options(
        stack.url(root + "/studies"),
        headers={**origin, "Access-Control-Request-Method": "GET", "Access-Control-Request-Headers": "accept,authorization"},
        timeout=30,
    )
    assert preflight.status_code == 200 and preflight.headers["access-control-allow-origin"] == OHIF_ORIGIN
    h = {**origin, **bearer(TENANT), "Accept": "application/dicom+json"}
    listing = requests.get(
        stack.url(root + "/studies"),
        params={"limit": 101, "offset": 0, "fuzzymatching": "false", "includefield": "00081030,00080060"},
        headers=h,
        timeout=30,
    )
    assert listing.status_code == 200 and listing.headers["access-control-allow-origin"]
    nih = header(next((data_dir / "dcm_qa_nih").rglob("*.dcm")))
    assert nih.StudyInstanceUID in {s["0020000D"]["Value"][0] for s in listing.json()}
    series = requests.get(stack.url(f"{root}/studies/{nih.StudyInstanceUID}/series"), headers=h, timeout=30).json()
    assert series
    for s in series:
        uid = s["0020000E"]["Value"][0]
        metadata = requests.get(
            stack.url(f"{root}/studies/{nih.StudyInstanceUID}/series/{uid}/metadata"), headers=h, timeout=30
        ).json()
        bulk = [v["BulkDataURI"] for item in metadata for v in item.values() if "BulkDataURI" in v]
        assert all(f"{root}/studies/" in uri for uri in bulk), bulk[:2]  # OHIF follows these with the same token
        sop = metadata[0]["00080018"]["Value"][0]
        frame = requests.get(
            stack.url(f"{root}/studies/{nih.StudyInstanceUID}/series/{uid}/instances/{sop}/frames/1"),
            headers={**h, "Accept": "multipart/related; type=application/octet-stream; transfer-syntax=*"},
            timeout=30,
        )
        assert frame.status_code == 200
