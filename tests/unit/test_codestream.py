"""The codestream header parser on real compressed files (every frame agrees with Rows and Columns)
and on forged ones (SIZ, JP2 image header, SOF, SOF55 rewritten), and the guard that applies it to
every frame pydicom decodes in a decode worker."""

from __future__ import annotations

import struct
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from pydicom import dcmread

from archive.pixels.codestream import CodestreamMismatch, check_frame, frame_geometries
from tests.pixel_bombs import forged_frame, frames_of

PYDICOM_DATA = ("pydicom-data", "data_store", "data")
PYDICOM_TESTS = Path(__import__("pydicom").__file__).parent / "data" / "test_files"
# one file per header kind, from the shared data and from pydicom's own test files
REAL = {
    "dcm_qa_ts/In/9.dcm": "JPEG 2000 SIZ marker",  # J2K lossless, Siemens
    "MR2_J2KR.dcm": "JPEG 2000 SIZ marker",
    "US1_J2KI.dcm": "JPEG 2000 SIZ marker",  # lossy, 3 samples
    "GDCMJ2K_TextGBR.dcm": "JP2 image header box",  # wrapped in a JP2 file
    "dcm_qa_ts/In/5.dcm": "JPEG SOF3 marker",  # JPEG lossless SV1
    "JPEG-LL.dcm": "JPEG SOF3 marker",
    "color3d_jpeg_baseline.dcm": "JPEG SOF0 marker",  # 120 frames, YBR
    "SC_rgb_jpeg_dcmtk.dcm": "JPEG SOF0 marker",
    "JPGExtended.dcm": "JPEG SOF1 marker",
    "dcm_qa_ts/In/7.dcm": "JPEG-LS SOF55 marker",
    "JPEGLSNearLossless_16.dcm": "JPEG-LS SOF55 marker",
    "SC_rgb_jls_lossy_line.dcm": "JPEG-LS SOF55 marker",
}


def find(data_dir: Path, name: str) -> Path:
    candidates = [data_dir / name, data_dir.joinpath(*PYDICOM_DATA, name), PYDICOM_TESTS / name]
    found = [p for p in candidates if p.exists()]
    assert found, f"{name} is missing from the test data"
    return found[0]


def syntax_and_shape(path: Path) -> tuple[str, int, int, int]:
    ds = dcmread(path, stop_before_pixels=True)
    return str(ds.file_meta.TransferSyntaxUID), int(ds.Rows), int(ds.Columns), int(ds.SamplesPerPixel)


@pytest.mark.parametrize("name, source", REAL.items())
def test_every_frame_of_a_real_file_agrees_with_its_header(data_dir, name, source):
    path = find(data_dir, name)
    syntax, rows, columns, samples = syntax_and_shape(path)
    for frame in frames_of(path):
        geometries = frame_geometries(syntax, frame)
        assert geometries and source in [g.source for g in geometries]
        assert {(g.columns, g.rows, g.samples) for g in geometries} == {(columns, rows, samples)}
        check_frame(syntax, frame, rows, columns, samples)


@pytest.mark.parametrize("name, source", REAL.items())
def test_a_forged_size_is_refused_with_the_header_that_said_it(data_dir, name, source):
    path = find(data_dir, name)
    syntax, rows, columns, samples = syntax_and_shape(path)
    *honest, last = frames_of(path)
    forged = forged_frame(last, 20000, 20000)
    assert len(forged) == len(last)
    for frame in honest:
        check_frame(syntax, frame, rows, columns, samples)
    with pytest.raises(CodestreamMismatch) as refused:
        check_frame(syntax, forged, rows, columns, samples)
    assert f"{source} describes 20000 x 20000" in str(refused.value)
    assert f"{columns} x {rows}" in str(refused.value)


def test_one_dimension_off_is_enough(data_dir):
    path = find(data_dir, "MR2_J2KR.dcm")
    syntax, rows, columns, samples = syntax_and_shape(path)
    [frame] = frames_of(path)
    with pytest.raises(CodestreamMismatch):
        check_frame(syntax, forged_frame(frame, columns, rows + 1), rows, columns, samples)


def test_samples_per_pixel_must_agree(data_dir):
    path = find(data_dir, "US1_J2KI.dcm")
    syntax, rows, columns, _ = syntax_and_shape(path)
    [frame] = frames_of(path)
    with pytest.raises(CodestreamMismatch, match="3 sample"):
        check_frame(syntax, frame, rows, columns, 1)


def test_a_jp2_whose_image_header_box_alone_lies_is_refused(data_dir):
    path = find(data_dir, "GDCMJ2K_TextGBR.dcm")
    syntax, rows, columns, samples = syntax_and_shape(path)
    [frame] = frames_of(path)
    lying = bytearray(frame)
    struct.pack_into(">II", lying, lying.find(b"ihdr") + 4, 20000, 20000)
    with pytest.raises(CodestreamMismatch, match="JP2 image header box"):
        check_frame(syntax, bytes(lying), rows, columns, samples)


def test_tiny_tiles_over_the_image_are_refused(data_dir):
    path = find(data_dir, "MR2_J2KR.dcm")
    syntax, rows, columns, samples = syntax_and_shape(path)
    [frame] = frames_of(path)
    tiled = bytearray(frame)
    struct.pack_into(">II", tiled, tiled.find(b"\xff\x51") + 22, 1, 1)  # XTsiz, YTsiz: 1024 x 1024 tiles
    with pytest.raises(CodestreamMismatch, match="1048576 tiles"):
        check_frame(syntax, bytes(tiled), rows, columns, samples)


def test_a_height_left_to_a_dnl_marker_is_refused(data_dir):
    path = find(data_dir, "JPEG-LL.dcm")
    syntax, rows, columns, samples = syntax_and_shape(path)
    [frame] = frames_of(path)
    with pytest.raises(CodestreamMismatch, match="256 x 0"):
        check_frame(syntax, forged_frame(frame, columns, 0), rows, columns, samples)


@pytest.mark.parametrize(
    "syntax, frame, says",
    [
        ("1.2.840.10008.1.2.4.90", b"", "does not start with a JPEG 2000"),
        ("1.2.840.10008.1.2.4.90", b"\xff\x4f\xff\x51\x00\x29" + bytes(10), "does not start with a JPEG 2000"),  # truncated SIZ
        ("1.2.840.10008.1.2.4.91", b"\x00\x00\x00\x0cjP  \r\n\x87\n", "no codestream box"),
        ("1.2.840.10008.1.2.4.50", b"\x00\xff\xd8", "start-of-image"),
        ("1.2.840.10008.1.2.4.70", b"\xff\xd8\xff\xc4\x00\x04\x00\x00\xff\xda\x00\x02", "no frame header"),  # DHT, then a scan
        ("1.2.840.10008.1.2.4.80", b"\xff\xd8\xff\xf7\x00\x05\x08", "truncated"),
    ],
)
def test_a_missing_or_broken_header_is_refused(syntax, frame, says):
    with pytest.raises(CodestreamMismatch, match=says):
        check_frame(syntax, frame, 64, 64, 1)


@pytest.mark.parametrize("syntax", ["1.2.840.10008.1.2.1", "1.2.840.10008.1.2.5", "1.2.840.10008.1.2.1.99"])
def test_syntaxes_without_a_sizing_header_are_not_parsed(syntax):
    assert frame_geometries(syntax, b"anything") is None
    check_frame(syntax, b"anything", 64, 64, 1)


GUARDED = """
    import sys
    from pydicom import dcmread
    from pydicom.encaps import encapsulate
    from pydicom.pixels import pixel_array
    from archive.pixels.codestream import CodestreamMismatch, guard_pydicom_decoding
    from tests.pixel_bombs import forged_frame, frames_of

    path = sys.argv[1]
    guard_pydicom_decoding()
    guard_pydicom_decoding()  # a second call wraps nothing twice
    assert pixel_array(path).shape == (1024, 1024)
    ds = dcmread(path)
    ds.PixelData = encapsulate([forged_frame(frames_of(path)[0], 20000, 20000)])
    try:
        ds.pixel_array
    except CodestreamMismatch as err:
        print("refused:", err)
"""


def test_the_guard_sees_every_frame_pydicom_decodes(data_dir):
    """The contract with pydicom: the hook exists and runs before any decoding plugin (in a process
    of its own, so this session's pydicom stays as it was)."""
    path = find(data_dir, "MR2_J2KR.dcm")
    root = Path(__file__).resolve().parents[2]
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(GUARDED), str(path)], cwd=root, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert "refused: the JPEG 2000 SIZ marker describes 20000 x 20000" in done.stdout
