"""Read a staged object's header once: Part-10 meta, the dataset up to the pixels, and whether it is whole."""

from __future__ import annotations

import mmap
import struct
import tempfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, cast

from pydicom import dcmread
from pydicom.charset import convert_encodings, default_encoding
from pydicom.datadict import tag_for_keyword
from pydicom.dataelem import DataElement, RawDataElement, convert_raw_data_element, empty_value_for_VR
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.filereader import read_file_meta_info
from pydicom.tag import BaseTag
from pydicom.uid import DeflatedExplicitVRLittleEndian, ExplicitVRBigEndian, ImplicitVRLittleEndian

from archive.dicom.attributes import INDEXED_KEYWORDS
from archive.dicom.completeness import LONG_VRS, Buffer, Incomplete, Walk, looks_implicit, names_no_vr, walk, walk_deflated
from archive.dicom.part10_meta import HEAD_BYTES, read_layout
from archive.dicom.uids import lenient_uid_problem, uid_problem
from archive.pixels.limits import Limits

UNDEFINED_LENGTH = 0xFFFFFFFF


class InvalidObject(ValueError):
    """The bytes are not an acceptable DICOM object; the message is the reason sent back."""


@dataclass(frozen=True)
class Header:
    dataset: Dataset  # the top-level elements receipt reads (HEADER_TAGS); all of them when pydicom parsed it
    transfer_syntax: str
    dataset_offset: int
    size: int
    nonconformance: str | None = None  # UIDs kept under uid_policy "lenient" that break PS3.5
    meta_sop_instance_uid: str | None = None  # (0002,0003)

    @property
    def sop_class_uid(self) -> str:
        return str(self.dataset.SOPClassUID)

    @property
    def sop_instance_uid(self) -> str:
        return str(self.dataset.SOPInstanceUID)


# what archive/attributes indexes and the checks below read; pydicom converts their values
HEADER_TAGS = frozenset(
    int(tag_for_keyword(keyword) or 0)
    for keyword in (
        *INDEXED_KEYWORDS,
        "SpecificCharacterSet",
        "SamplesPerPixel",
        "BitsAllocated",
        "NumberOfFrames",
        "Rows",
        "Columns",
    )
)


@dataclass(frozen=True)
class _Meta:
    dataset_offset: int
    transfer_syntax: str
    sop_instance_uid: str | None
    plain: bool  # read by hand: a group length that ends the group, each value where it says


def has_part10_preamble(path: Path) -> bool:
    with open(path, "rb") as fp:
        fp.seek(128)
        return fp.read(4) == b"DICM"


def read_header(path: Path, limits: Limits = Limits(), lenient_uids: bool = False, whole: bool = False) -> Header:
    """Parse and validate; raise InvalidObject with a reason a sender can act on. The file is walked
    once (lengths, nesting, deflate size) before anything parses it, so a hostile one cannot exhaust
    memory or the stack; the walk notes where HEADER_TAGS' values are, and pydicom converts those
    alone. pydicom parses the whole header instead when the walk met what it reads its own way
    (a File Meta group not plain, a Deflated dataset, an unknown VR, an undefined length on no
    sequence), so what is stored is what pydicom reads; and when asked for the `whole` header."""
    size = path.stat().st_size
    if size < 132:
        raise InvalidObject(_NOT_PART10)
    with open(path, "rb") as fp, mmap.mmap(fp.fileno(), 0, access=mmap.ACCESS_READ) as buf:
        if buf[128:132] != b"DICM":
            raise InvalidObject(_NOT_PART10)
        meta = _read_meta(buf, path)
        found = _walked(buf, fp, path, meta, limits)
        plain = meta.plain and not found.unusual and not whole
        ds = raw_dataset(buf, found, meta.transfer_syntax) if plain else None
    if ds is None:
        ds = _parsed_by_pydicom(path)
    notes = _require_identity(ds, lenient_uids)
    _require_whole_pixels(ds, found.pixel_data_length)
    _require_decodable_size(ds, limits)
    return Header(ds, meta.transfer_syntax, meta.dataset_offset, size, "; ".join(notes) or None, meta.sop_instance_uid)


_NOT_PART10 = "not a DICOM Part-10 object: the 'DICM' prefix at byte 128 is missing"


def stored_dataset(path: Path, limits: Limits = Limits()) -> tuple[Dataset, str | None]:
    """A stored object's header as `dcmread(path, stop_before_pixels=True)` gives it, and its top-level
    Pixel Data's VR (None: it has none), from one walk over the file: the elements are pydicom's raw
    ones, converted when read. The walk replaces both pydicom's read of every element (1.4 ms of the
    worker's CPU per instance, bench/profile_ingest.py) and the second walk that found the VR.
    pydicom parses it when the walk met what pydicom reads its own way; InvalidObject when the walk
    cannot finish (an object stored before a stricter walk)."""
    with open(path, "rb") as fp, mmap.mmap(fp.fileno(), 0, access=mmap.ACCESS_READ) as buf:
        meta = _read_meta(buf, path)
        found = _walked(buf, fp, path, meta, limits, everything=True)
        if meta.plain and not found.unusual:
            return raw_dataset(buf, found, meta.transfer_syntax), found.pixel_data_vr
    return dcmread(path, stop_before_pixels=True), found.pixel_data_vr


def pixel_data_vr(path: Path, limits: Limits = Limits()) -> str | None:
    """The VR of a stored object's top-level Pixel Data as pydicom reads it, or None when it has
    none: read from the file (one walk, no pixel bytes), not guessed from its image module."""
    with open(path, "rb") as fp, mmap.mmap(fp.fileno(), 0, access=mmap.ACCESS_READ) as buf:
        return _walked(buf, fp, path, _read_meta(buf, path), limits).pixel_data_vr


def _walked(buf: Buffer, fp: BinaryIO, path: Path, meta: _Meta, limits: Limits, everything: bool = False) -> Walk:
    try:
        if meta.transfer_syntax != DeflatedExplicitVRLittleEndian:
            return walk(buf, meta.dataset_offset, meta.transfer_syntax, HEADER_TAGS, everything)
        # inflated beside the staged object (its disk, not /tmp), and gone when closed
        with tempfile.TemporaryFile(dir=path.parent) as spool:
            return walk_deflated(fp, meta.dataset_offset, limits.max_inflated_bytes, spool)
    except Incomplete as err:
        raise InvalidObject(f"truncated or corrupt object: {err}") from None


def raw_dataset(buf: Buffer, found: Walk, transfer_syntax: str) -> Dataset:
    """The noted elements as pydicom's reader leaves them (raw, converted when read), with the
    encoding and character set it would have set."""
    implicit, little = transfer_syntax == ImplicitVRLittleEndian, transfer_syntax != ExplicitVRBigEndian
    elements: dict[BaseTag, DataElement | RawDataElement] = {}
    charset: RawDataElement | None = None
    for tag, (vr_bytes, pos, length) in sorted(found.elements.items()):
        vr = None if vr_bytes is None else vr_bytes.decode("ascii")
        # an empty value as pydicom's reader gives it (b"" for most VRs)
        value = buf[pos : pos + length] if length else cast(bytes | None, empty_value_for_VR(vr, raw=True))
        declared = UNDEFINED_LENGTH if tag in found.undefined else length
        raw = elements[BaseTag(tag)] = RawDataElement(BaseTag(tag), vr, declared, value, pos, implicit, little)
        if tag == 0x00080005:
            charset = raw
    ds = Dataset(elements)
    encoding = convert_encodings(convert_raw_data_element(charset).value) if charset else default_encoding
    ds.set_original_encoding(implicit, little, encoding)
    return ds


def _parsed_by_pydicom(path: Path) -> Dataset:
    try:
        return dcmread(path, stop_before_pixels=True)
    except (
        InvalidDicomError,
        EOFError,
        struct.error,
        ValueError,
        OSError,
        KeyError,
        IndexError,
        TypeError,
        RecursionError,
        OverflowError,
        AttributeError,
        zlib.error,
    ) as err:
        raise InvalidObject(f"cannot parse the DICOM header: {type(err).__name__}: {str(err)[:200]}") from None


def _read_meta(buf: Buffer, path: Path) -> _Meta:
    """The File Meta group, read by hand when it is plain (archive/part10_meta), else by pydicom."""
    layout = read_layout(buf[:HEAD_BYTES])
    if layout is not None:
        meta = _Meta(layout.dataset_offset, layout.transfer_syntax, layout.sop_instance_uid or None, True)
    else:
        try:
            file_meta = read_file_meta_info(path)
            meta = _Meta(
                _meta_end(buf),
                str(file_meta.get("TransferSyntaxUID", "") or ""),
                str(file_meta.get("MediaStorageSOPInstanceUID", "") or "") or None,
                False,
            )
        except (InvalidDicomError, EOFError, struct.error, ValueError, OSError, KeyError, TypeError) as err:
            raise InvalidObject(f"cannot parse the File Meta Information: {err}") from None
    if uid_problem("TransferSyntaxUID", meta.transfer_syntax):
        raise InvalidObject("the File Meta Information has no valid TransferSyntaxUID")
    return meta


def _meta_end(buf: Buffer) -> int:
    """Offset of the first dataset element after the group 0002 elements, read as pydicom reads
    them: explicit VR LE unless the first element's VR bytes are no VR (then implicit VR)."""
    pos = 132
    implicit = len(buf) >= pos + 6 and looks_implicit(buf, pos)
    while True:
        if pos + 8 > len(buf):
            raise InvalidObject("file ends inside the File Meta Information")
        group, _, vr, length = struct.unpack_from("<HH2sH", buf, pos)
        if group != 0x0002:
            return pos
        if implicit or names_no_vr(vr):
            (length,) = struct.unpack_from("<L", buf, pos + 4)
            pos += 8 + length
        elif vr in LONG_VRS:
            if pos + 12 > len(buf):
                raise InvalidObject("file ends inside the File Meta Information")
            (length,) = struct.unpack_from("<L", buf, pos + 8)
            pos += 12 + length
        else:
            pos += 8 + length


def _require_decodable_size(ds: Dataset, limits: Limits) -> None:
    """What decoding would allocate, from the image module, against the limits (pixel bombs: a small
    compressed file that declares 65535 x 65535 x 1000 frames)."""
    try:
        rows, columns = int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0)
        samples, bits = int(ds.get("SamplesPerPixel", 1) or 1), int(ds.get("BitsAllocated", 8) or 8)
        frames = int(ds.get("NumberOfFrames", 1) or 1)
    except (TypeError, ValueError):
        raise InvalidObject("Rows, Columns, SamplesPerPixel, BitsAllocated or NumberOfFrames is not a number") from None
    frame = rows * columns * samples * bits // 8
    if frame > limits.max_frame_bytes:
        raise InvalidObject(
            f"exceeds max_frame_bytes: one {rows}x{columns}x{samples} frame at {bits} bits is {frame} "
            f"bytes decoded; this archive takes at most {limits.max_frame_bytes}"
        )
    if frame * max(frames, 1) > limits.max_pixel_bytes:
        raise InvalidObject(
            f"exceeds max_pixel_bytes: {frames} frames are {frame * frames} bytes decoded; "
            f"this archive takes at most {limits.max_pixel_bytes}"
        )


def _require_identity(ds: Dataset, lenient: bool) -> list[str]:
    """Refuses a missing or (when not lenient) non-conformant UID; returns what lenient let through."""
    notes = []
    for keyword in ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID"):
        try:
            value = ds.get(keyword)
        except Exception as err:  # noqa: BLE001 - a malformed element of any kind
            raise InvalidObject(f"{keyword} cannot be read: {err}") from None
        text = None if value is None else str(value)
        problem, note = lenient_uid_problem(keyword, text) if lenient else (uid_problem(keyword, text), None)
        if problem:
            raise InvalidObject(problem)
        if note:
            notes.append(note)
    return notes


def _require_whole_pixels(ds: Dataset, pixel_bytes: int | None) -> None:
    """Native Pixel Data shorter than its image module says is a truncated image, however
    consistent its length field (a sender may re-encode a cut file)."""
    if pixel_bytes is None:
        return
    try:
        rows, columns = int(ds.Rows), int(ds.Columns)
        samples, bits = int(ds.get("SamplesPerPixel", 1) or 1), int(ds.BitsAllocated)
        frames = int(ds.get("NumberOfFrames", 1) or 1)
    except (AttributeError, TypeError, ValueError):
        return  # no complete image module to check against
    needed = (rows * columns * samples * frames * bits + 7) // 8
    if pixel_bytes < needed:
        raise InvalidObject(
            f"truncated pixel data: {pixel_bytes} bytes where {rows}x{columns}x{samples}x{frames} at {bits} bits need {needed}"
        )
