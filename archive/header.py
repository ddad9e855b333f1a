"""Read a staged object's header once: Part-10 meta, the dataset up to the pixels, and whether it is whole."""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.filereader import read_file_meta_info
from pydicom.uid import DeflatedExplicitVRLittleEndian

from archive.completeness import LONG_VRS, Incomplete, check_complete, check_inflated_size
from archive.limits import Limits
from archive.uids import lenient_uid_problem, uid_problem


class InvalidObject(ValueError):
    """The bytes are not an acceptable DICOM object; the message is the reason sent back."""


@dataclass(frozen=True)
class Header:
    dataset: Dataset
    transfer_syntax: str
    dataset_offset: int
    size: int
    nonconformance: str | None = None  # UIDs kept under uid_policy "lenient" that break PS3.5

    @property
    def sop_class_uid(self) -> str:
        return str(self.dataset.SOPClassUID)

    @property
    def sop_instance_uid(self) -> str:
        return str(self.dataset.SOPInstanceUID)

    @property
    def meta_sop_instance_uid(self) -> str | None:
        value = self.dataset.file_meta.get("MediaStorageSOPInstanceUID")
        return str(value) if value else None


def _meta_end(fp: BinaryIO) -> int:
    """Offset of the first dataset element after the group 0002 elements (explicit VR LE)."""
    fp.seek(132)
    while True:
        start = fp.tell()
        head = fp.read(6)
        if len(head) < 6:
            raise InvalidObject("file ends inside the File Meta Information")
        group, _, vr = struct.unpack("<HH2s", head)
        if group != 0x0002:
            return start
        if vr in LONG_VRS:
            fp.read(2)
            (length,) = struct.unpack("<L", fp.read(4))
        else:
            (length,) = struct.unpack("<H", fp.read(2))
        fp.seek(length, 1)


def has_part10_preamble(path: Path) -> bool:
    with open(path, "rb") as fp:
        fp.seek(128)
        return fp.read(4) == b"DICM"


def read_header(path: Path, limits: Limits = Limits(), lenient_uids: bool = False) -> Header:
    """Parse and validate; raise InvalidObject with a reason a sender can act on. The file is walked
    (lengths, nesting, deflate size) before pydicom parses it, so a hostile one cannot exhaust memory
    or the stack."""
    size = path.stat().st_size
    if size < 132 or not has_part10_preamble(path):
        raise InvalidObject("not a DICOM Part-10 object: the 'DICM' prefix at byte 128 is missing")
    with open(path, "rb") as fp:
        offset = _meta_end(fp)
        transfer_syntax = _meta_transfer_syntax(path)
        if transfer_syntax == DeflatedExplicitVRLittleEndian:
            try:
                check_inflated_size(fp, offset, limits.max_inflated_bytes)
            except Incomplete as err:
                raise InvalidObject(str(err)) from None
        try:
            pixel_bytes = check_complete(fp, offset, transfer_syntax, size)
        except (Incomplete, struct.error) as err:
            raise InvalidObject(f"truncated or corrupt object: {err}") from None
    try:
        ds = dcmread(path, stop_before_pixels=True)
    except (InvalidDicomError, EOFError, struct.error, ValueError, OSError, KeyError, IndexError, TypeError,
            RecursionError, OverflowError, AttributeError) as err:
        raise InvalidObject(f"cannot parse the DICOM header: {type(err).__name__}: {str(err)[:200]}") from None
    notes = _require_identity(ds, lenient_uids)
    _require_whole_pixels(ds, pixel_bytes)
    _require_decodable_size(ds, limits)
    return Header(ds, transfer_syntax, offset, size, "; ".join(notes) or None)


def _meta_transfer_syntax(path: Path) -> str:
    try:
        meta = read_file_meta_info(path)
    except (InvalidDicomError, EOFError, struct.error, ValueError, OSError, KeyError, TypeError) as err:
        raise InvalidObject(f"cannot parse the File Meta Information: {err}") from None
    transfer_syntax = str(meta.get("TransferSyntaxUID", "") or "")
    if uid_problem("TransferSyntaxUID", transfer_syntax):
        raise InvalidObject("the File Meta Information has no valid TransferSyntaxUID")
    return transfer_syntax


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
        raise InvalidObject(f"exceeds max_frame_bytes: one {rows}x{columns}x{samples} frame at {bits} bits is {frame} "
                            f"bytes decoded; this archive takes at most {limits.max_frame_bytes}")
    if frame * max(frames, 1) > limits.max_pixel_bytes:
        raise InvalidObject(f"exceeds max_pixel_bytes: {frames} frames are {frame * frames} bytes decoded; "
                            f"this archive takes at most {limits.max_pixel_bytes}")


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
