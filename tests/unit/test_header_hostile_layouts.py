"""Layouts where a hand-written header reader and pydicom could part ways (a second review of the
walk found each of these): the archive must index what pydicom's own reader shows, or refuse the
object with a reason; never index values that pydicom, and so every viewer built on it, does not see.

Each case is built from real files where the layout allows (a GE scanner's file with a private UN
sequence, relabelled dcm_qa_ts files), else from the smallest bytes that show it.
"""

from __future__ import annotations

import struct
import warnings
import zlib
from pathlib import Path

import pydicom
import pytest
from pynetdicom.dsutils import split_dataset

from archive.dicom.header import InvalidObject, read_header
from archive.dicom.part10_meta import HEAD_BYTES, read_layout

EXPLICIT, IMPLICIT = "1.2.840.10008.1.2.1", "1.2.840.10008.1.2"
DEFLATED, JPEG_LOSSLESS = "1.2.840.10008.1.2.1.99", "1.2.840.10008.1.2.4.70"
CT = b"1.2.840.10008.5.1.4.1.1.2"
LONG = {"OB", "OD", "OF", "OL", "OV", "OW", "SQ", "SV", "UC", "UN", "UR", "UT", "UV"}
ITEM_UNDEFINED = struct.pack("<HHI", 0xFFFE, 0xE000, 0xFFFFFFFF)
ITEM_END = struct.pack("<HHI", 0xFFFE, 0xE00D, 0)
SEQUENCE_END = struct.pack("<HHI", 0xFFFE, 0xE0DD, 0)
KEYS = ("SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID", "PatientName", "PatientID")


def _even(value: bytes, vr: str) -> bytes:
    return value + (b"\x00" if vr == "UI" else b" ") if len(value) % 2 else value


def ex(group: int, element: int, vr: str, value: bytes, pad: bool = True) -> bytes:
    """One explicit VR little endian element."""
    value = _even(value, vr) if pad else value
    if vr in LONG:
        return struct.pack("<HH2sHI", group, element, vr.encode(), 0, len(value)) + value
    return struct.pack("<HH2sH", group, element, vr.encode(), len(value)) + value


def im(group: int, element: int, value: bytes, vr: str = "LO") -> bytes:
    """One implicit VR little endian element."""
    value = _even(value, vr)
    return struct.pack("<HHI", group, element, len(value)) + value


def meta(ts: str, sop: bytes = b"1.2.3.4.5") -> bytes:
    body = (
        ex(2, 1, "OB", b"\x00\x01")
        + ex(2, 2, "UI", CT)
        + ex(2, 3, "UI", sop)
        + ex(2, 0x10, "UI", ts.encode())
        + ex(2, 0x12, "UI", b"1.2.3.9")
    )
    return b"\x00" * 128 + b"DICM" + ex(2, 0, "UL", struct.pack("<I", len(body))) + body


def ident(study: bytes = b"1.2.3.6", series: bytes = b"1.2.3.7", implicit: bool = False) -> bytes:
    if implicit:
        return im(8, 0x16, CT, "UI") + im(8, 0x18, b"1.2.3.4.5", "UI") + im(0x20, 0xD, study, "UI") + im(0x20, 0xE, series, "UI")
    return ex(8, 0x16, "UI", CT) + ex(8, 0x18, "UI", b"1.2.3.4.5") + ex(0x20, 0xD, "UI", study) + ex(0x20, 0xE, "UI", series)


def undefined_sq(group: int, element: int, *items: bytes, vr: bytes = b"SQ") -> bytes:
    return struct.pack("<HH2sHI", group, element, vr, 0, 0xFFFFFFFF) + b"".join(items) + SEQUENCE_END


def deflate(data: bytes) -> bytes:
    packer = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    return packer.compress(data) + packer.flush()


def write(tmp_path: Path, data: bytes, name: str = "object.dcm") -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def pydicom_view(path: Path) -> dict[str, str]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = pydicom.dcmread(path, stop_before_pixels=True)
    return {key: str(ds.get(key, "")) for key in KEYS}


def archive_view(path: Path) -> dict[str, str]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = read_header(path).dataset
    return {key: str(ds.get(key, "")) for key in KEYS}


def refused(path: Path) -> str:
    with pytest.raises(InvalidObject) as caught:
        read_header(path)
    return str(caught.value)


REAL = ex(8, 5, "CS", b"ISO_IR 100") + ident() + ex(0x10, 0x10, "PN", b"REAL^NAME") + ex(0x10, 0x20, "LO", b"REAL-ID")
EVIL = ex(0x10, 0x10, "PN", b"EVIL^NAME") + ex(0x10, 0x20, "LO", b"EVIL-ID")


def test_an_element_running_past_its_items_end_is_refused(tmp_path):
    """pydicom reads an item's last element to its own end; a walk that skipped by the item's length
    read what that element hides (here a sequence end and a second PatientName) as top level."""
    hidden = ex(0x0009, 0x1010, "OB", SEQUENCE_END + EVIL, pad=False)
    item = struct.pack("<HHI", 0xFFFE, 0xE000, 12) + hidden  # the item's length covers the OB's header only
    path = write(tmp_path, meta(EXPLICIT) + REAL + ex(9, 0x10, "LO", b"ACME") + undefined_sq(8, 0x1115, item))
    assert "past the end of its sequence item" in refused(path)


def test_a_delimiter_whose_length_bytes_spell_a_vr_is_refused(tmp_path):
    """(FFFE,E00D) followed by "OB\\0\\0": pydicom reads 4 bytes more than the delimiter has, and from
    there both readers see different elements. PS3.5 7.5 gives a delimiter length 0."""
    item = ITEM_UNDEFINED + ex(8, 0x1150, "UI", CT) + b"\xfe\xff\x0d\xe0OB\x00\x00"
    path = write(tmp_path, meta(EXPLICIT) + REAL + undefined_sq(8, 0x1115, item) + EVIL)
    assert "(FFFE,E00D) with length" in refused(path)


def test_an_item_outside_a_sequence_is_refused(tmp_path):
    path = write(tmp_path, meta(EXPLICIT) + REAL + struct.pack("<HHI", 0xFFFE, 0xE000, 4) + b"abcd")
    assert "out of place" in refused(path)


def test_a_dataset_readable_as_implicit_and_as_explicit_is_indexed_as_pydicom_reads_it(tmp_path):
    """Labelled implicit VR, but the first element carries a VR: pydicom reads explicit VR. Read as
    implicit, (0008,0005)'s bytes are a 21,315-byte skip into a private OB that holds another dataset."""
    first = ex(8, 5, "CS", b"")
    skip = struct.unpack("<I", first[4:8])[0]
    explicit_part = ident() + ex(0x10, 0x10, "PN", b"REAL^NAME") + ex(0x10, 0x20, "LO", b"REAL-ID")
    implicit_part = (
        im(8, 5, b"ISO_IR 100", "CS")
        + ident(b"6.6.6.1", b"6.6.6.2", implicit=True)
        + im(0x10, 0x10, b"EVIL^NAME", "PN")
        + im(0x10, 0x20, b"EVIL-ID")
    )
    gap = b"\x00" * (skip - len(explicit_part) - 12)
    path = write(tmp_path, meta(IMPLICIT) + first + explicit_part + ex(9, 0x1010, "OB", gap + implicit_part, pad=False))
    assert archive_view(path) == pydicom_view(path)
    assert archive_view(path)["PatientName"] == "REAL^NAME"


def _relabelled(source: Path, ts: str, tmp_path: Path, name: str) -> Path:
    """The same real file with another transfer syntax in its File Meta (a known writer bug)."""
    raw = source.read_bytes()
    offset = 144 + struct.unpack_from("<I", raw, 140)[0]
    sop = pydicom.dcmread(source, stop_before_pixels=True).SOPInstanceUID.encode()
    return write(tmp_path, meta(ts, sop) + raw[offset:], name)


def test_real_files_whose_file_meta_names_the_wrong_vr_encoding_are_read_as_pydicom_reads_them(data_dir, tmp_path):
    by_syntax = {
        str(pydicom.dcmread(p, stop_before_pixels=True).file_meta.TransferSyntaxUID): p
        for p in sorted((data_dir / "dcm_qa_ts").rglob("*.dcm"))
    }
    for source, label in ((by_syntax[EXPLICIT], IMPLICIT), (by_syntax[IMPLICIT], EXPLICIT)):
        path = _relabelled(source, label, tmp_path, f"relabelled-{label}.dcm")
        assert archive_view(path) == pydicom_view(path), source
        assert archive_view(path)["PatientID"] == str(pydicom.dcmread(source, stop_before_pixels=True).PatientID)


def test_an_implicit_vr_item_in_an_explicit_file_is_read(tmp_path):
    """pydicom issues #1035/#1067: some writers encode sequence items in implicit VR."""
    item = ITEM_UNDEFINED + im(8, 0x1150, CT, "UI") + im(8, 0x1155, b"1.2.3.99", "UI") + ITEM_END
    path = write(tmp_path, meta(EXPLICIT) + ident() + undefined_sq(8, 0x1140, item) + ex(0x10, 0x10, "PN", b"REAL^NAME"))
    assert archive_view(path) == pydicom_view(path)


def test_a_private_un_sequence_of_undefined_length_in_a_real_file_is_read(data_dir, tmp_path):
    """PS3.5 6.2.2: a system that did not know a private sequence forwards it as UN with undefined
    length, its items in implicit VR. Such objects were refused as truncated."""
    source = sorted((data_dir / "dcm_qa_ge").rglob("*.dcm"))[0]
    raw = source.read_bytes()
    item = ITEM_UNDEFINED + im(0x7FD1, 0x1030, b"PRIVATE VALUE") + im(0x7FD1, 0x1031, b"1.2.3.4", "UI") + ITEM_END
    private = ex(0x7FD1, 0x10, "LO", b"ACME_PRIVATE") + undefined_sq(0x7FD1, 0x1029, item, vr=b"UN")
    pixels = raw.rindex(b"\xe0\x7f\x10\x00OW")
    path = write(tmp_path, raw[:pixels] + private + raw[pixels:])
    assert archive_view(path) == pydicom_view(path)
    assert archive_view(path)["PatientID"] == str(pydicom.dcmread(source, stop_before_pixels=True).PatientID)


def _meta_ending_at(end_at: int) -> bytes:
    """A File Meta group whose stated length ends at `end_at`, and one more (0002,0010) after it."""
    body = (
        ex(2, 1, "OB", b"\x00\x01")
        + ex(2, 2, "UI", CT)
        + ex(2, 3, "UI", b"1.2.3.4.5")
        + ex(2, 0x10, "UI", EXPLICIT.encode())
        + ex(2, 0x12, "UI", b"1.2.3.9")
    )
    fill = end_at - (144 + len(body)) - 12
    body += struct.pack("<HH2sHI", 2, 0x0102, b"OB", 0, fill) + b"\x00" * fill
    head = b"\x00" * 128 + b"DICM" + ex(2, 0, "UL", struct.pack("<I", len(body))) + body
    return head + ex(2, 0x10, "UI", JPEG_LOSSLESS.encode())


@pytest.mark.parametrize("end_at", [HEAD_BYTES, HEAD_BYTES - 1])
def test_a_file_meta_group_going_on_past_the_read_head_is_read_by_pydicom(tmp_path, end_at):
    fragment = b"\xff\xd8" + b"\x00" * 100 + b"\xff\xd9"
    pixels = (
        struct.pack("<HH2sHI", 0x7FE0, 0x10, b"OB", 0, 0xFFFFFFFF)
        + struct.pack("<HHI", 0xFFFE, 0xE000, 0)
        + struct.pack("<HHI", 0xFFFE, 0xE000, len(fragment))
        + fragment
        + SEQUENCE_END
    )
    path = write(tmp_path, _meta_ending_at(end_at) + REAL + pixels)
    assert read_layout(path.read_bytes()[:HEAD_BYTES]) is None
    file_meta, offset = split_dataset(path)
    header = read_header(path)
    assert (
        (header.transfer_syntax, header.dataset_offset)
        == (str(file_meta.TransferSyntaxUID), offset)
        == (JPEG_LOSSLESS, end_at + 30)
    )


def test_a_file_meta_element_without_a_vr_is_read_with_a_four_byte_length_as_pydicom_does(tmp_path):
    no_vr = struct.pack("<HHI", 2, 0x0100, 4) + b"\x08\x00\x05\x00"  # (0002,0100) whose VR bytes are 04 00
    body = (
        ex(2, 1, "OB", b"\x00\x01")
        + ex(2, 2, "UI", CT)
        + ex(2, 3, "UI", b"1.2.3.4.5")
        + ex(2, 0x10, "UI", EXPLICIT.encode())
        + no_vr
    )
    path = write(tmp_path, b"\x00" * 128 + b"DICM" + ex(2, 0, "UL", struct.pack("<I", len(body))) + body + REAL)
    assert read_header(path).dataset_offset == split_dataset(path)[1]
    assert archive_view(path) == pydicom_view(path)


@pytest.mark.parametrize("length", [0, 8])
def test_a_group_length_element_of_another_size_is_refused(tmp_path, length):
    """With (0002,0000) 0 or 8 bytes long, pydicom's File Meta ends early and holds no transfer syntax."""
    head = bytearray(meta(EXPLICIT))
    head[138:140] = struct.pack("<H", length)
    assert "no valid TransferSyntaxUID" in refused(write(tmp_path, bytes(head) + REAL))


IMAGE = (
    ex(0x28, 2, "US", struct.pack("<H", 1))
    + ex(0x28, 0x10, "US", struct.pack("<H", 128))
    + ex(0x28, 0x11, "US", struct.pack("<H", 128))
    + ex(0x28, 0x100, "US", struct.pack("<H", 16))
)
NATIVE_PIXELS = struct.pack("<HH2sHI", 0x7FE0, 0x10, b"OW", 0, 128 * 128 * 2)


def test_a_deflated_object_whose_inflated_pixels_are_cut_is_refused(tmp_path):
    cut = deflate(REAL + IMAGE + NATIVE_PIXELS + b"\x01\x02" * 50)
    assert "claims 32768 bytes" in refused(write(tmp_path, meta(DEFLATED) + cut))
    whole = write(tmp_path, meta(DEFLATED) + deflate(REAL + IMAGE + NATIVE_PIXELS + b"\x01\x02" * 128 * 128), "whole.dcm")
    assert archive_view(whole) == pydicom_view(whole)


def test_a_cut_deflate_stream_is_refused_with_a_reason(tmp_path):
    stream = deflate(REAL + IMAGE + NATIVE_PIXELS + b"\x01\x02" * 128 * 128 + b"\x00" * 4096)
    path = write(tmp_path, meta(DEFLATED) + stream[: len(stream) // 2])
    assert "ends before its deflate stream does" in refused(path)
    assert list(tmp_path.iterdir()) == [path]  # the inflated copy is gone


def test_attributes_after_the_pixel_data_are_not_indexed_whichever_path_reads_the_header(tmp_path):
    """dcmread(stop_before_pixels) stops at Pixel Data; the walk noted what followed, so the same
    bytes were indexed one way or the other depending on an unrelated element elsewhere."""
    pixels = (
        ex(0x28, 2, "US", struct.pack("<H", 1))
        + ex(0x28, 0x10, "US", struct.pack("<H", 2))
        + ex(0x28, 0x11, "US", struct.pack("<H", 2))
        + ex(0x28, 0x100, "US", struct.pack("<H", 8))
        + ex(0x7FE0, 0x10, "OB", b"\x00" * 4)
    )
    unknown_vr = struct.pack("<HH2sH", 9, 0x1001, b"XX", 2) + b"ab"  # sends the header to pydicom's parse
    for name, body in (("walked.dcm", REAL + pixels + EVIL), ("parsed.dcm", REAL + unknown_vr + pixels + EVIL)):
        path = write(tmp_path, meta(EXPLICIT) + body, name)
        assert archive_view(path)["PatientName"] == "REAL^NAME", name
        assert archive_view(path) == pydicom_view(path), name
