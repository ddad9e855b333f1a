"""Frames of a stored object: cut out of native Pixel Data, or taken as the compressed fragments."""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.encaps import get_frame, parse_fragments
from pydicom.filereader import read_file_meta_info
from pydicom.pixels.utils import pixel_array
from pydicom.uid import UID, ExplicitVRBigEndian, ExplicitVRLittleEndian

from archive.pixels.decode_pool import CallerError, DecodePool, progress
from archive.pixels.frame_list import check_against

# PS3.18 Table 8.7.3-5: the media type a compressed frame is sent as
FRAME_MEDIA_TYPES = {
    "1.2.840.10008.1.2.4.50": "image/jpeg",
    "1.2.840.10008.1.2.4.51": "image/jpeg",
    "1.2.840.10008.1.2.4.57": "image/jpeg",
    "1.2.840.10008.1.2.4.70": "image/jpeg",
    "1.2.840.10008.1.2.4.80": "image/jls",
    "1.2.840.10008.1.2.4.81": "image/jls",
    "1.2.840.10008.1.2.4.90": "image/jp2",
    "1.2.840.10008.1.2.4.91": "image/jp2",
    "1.2.840.10008.1.2.4.201": "image/jphc",
    "1.2.840.10008.1.2.4.202": "image/jphc",
    "1.2.840.10008.1.2.4.203": "image/jphc",
    "1.2.840.10008.1.2.5": "image/dicom-rle",
}


class FrameNotFound(CallerError, LookupError):
    pass


class NoPixelData(CallerError, LookupError):
    pass


DEFER_BYTES = 64 * 1024  # values above this stay on disk until used: Pixel Data above all


def open_pixels(path: str | Path | BinaryIO) -> Dataset:
    """The object, its large values read only when used (a file-like is read whole)."""
    return dcmread(path, defer_size=None if hasattr(path, "read") else DEFER_BYTES)


def frame_array(path: str | Path | BinaryIO, ds: Dataset, index: int, raw: bool = False) -> np.ndarray:
    """One frame of `ds` (opened from `path`). A compressed frame, or one of many native frames,
    is read from the file alone: the other frames never enter memory (a frame of a 200 MB native
    cine: 1 ms, not 110 ms and 200 MB). pydicom cannot do that inside a deflated file."""
    syntax = UID(str(ds.file_meta.TransferSyntaxUID))
    alone = syntax.is_encapsulated or (_frame_count(ds) > 1 and not syntax.is_deflated)
    return pixel_array(path if alone else ds, index=index, raw=raw)


@dataclass(frozen=True)
class Frames:
    transfer_syntax: str  # of the returned bytes
    frames: list[bytes]


def _frame_count(ds: Dataset) -> int:
    return int(ds.get("NumberOfFrames", 1) or 1)


def _check(ds: Dataset, numbers: list[int]) -> int:
    if "PixelData" not in ds:
        raise NoPixelData("the instance has no Pixel Data")
    return _check_numbers(numbers, _frame_count(ds))


def _check_numbers(numbers: list[int], count: int) -> int:
    check_against(numbers, count)
    for n in numbers:
        if n < 1 or n > count:
            raise FrameNotFound(f"frame {n} does not exist: the instance has {count} frame(s)")
    return count


def decoded_frame_bytes(ds: Dataset) -> int:
    """One frame decoded, as WADO-RS sends it (1-bit frames go out a byte a pixel)."""
    samples = int(ds.get("SamplesPerPixel", 1) or 1)
    return int(ds.Rows) * int(ds.Columns) * samples * max(1, int(ds.BitsAllocated) // 8)


def batches(numbers: list[int], frame_bytes: int) -> list[list[int]]:
    """`numbers` in runs of at most BATCH_BYTES of frames (one frame at least): what one pool call
    returns, and so what an answer in flight holds."""
    size = max(1, BATCH_BYTES // max(1, frame_bytes))
    return [numbers[i : i + size] for i in range(0, len(numbers), size)]


BATCH_BYTES = 8 * 2**20


class FrameReader:
    """The frames of one stored object as stored, each read from the file alone when asked for:
    the header is read once, and a frame of a 1 GB cine costs that frame, not the cine. Native
    frames come out little endian."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file = open(path, "rb")  # noqa: SIM115 - held while the answer streams; close() ends it
        try:
            self.ds = dcmread(self._file, stop_before_pixels=True)
            self.syntax = UID(str(self.ds.file_meta.TransferSyntaxUID))
            # pydicom reads a deflated object inflated in memory: no file offset means anything there
            self._whole = dcmread(path) if self.syntax.is_deflated else None
            self._value_at = None if self._whole is not None else _pixel_value_start(self._file, self.syntax)
            self._starts: list[int] | None = None  # each frame's fragment, when that is how it is stored
        except BaseException:
            self._file.close()
            raise

    def __enter__(self) -> FrameReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._file.close()

    @property
    def count(self) -> int:
        return _frame_count(self.ds)

    @property
    def transfer_syntax(self) -> str:
        """Of the bytes frame() returns."""
        return str(self.syntax) if self.syntax.is_encapsulated else ExplicitVRLittleEndian

    def check(self, numbers: list[int]) -> None:
        """BadFrameList, NoPixelData or FrameNotFound unless every number is one of our frames."""
        has_pixels = "PixelData" in self._whole if self._whole is not None else self._value_at is not None
        if not has_pixels:
            raise NoPixelData("the instance has no Pixel Data")
        _check_numbers(numbers, self.count)

    def frame(self, number: int) -> bytes:
        if self._whole is not None:
            return _frame_in_memory(self._whole, number, self.syntax)
        assert self._value_at is not None  # check() refuses an object without Pixel Data
        if self.syntax.is_encapsulated:
            return self._encapsulated(self._value_at, number)
        if int(self.ds.BitsAllocated) == 1:
            # 1-bit frames need not start on a byte boundary; pydicom unpacks the one asked for
            return pixel_array(self.path, index=number - 1).astype(np.uint8).tobytes()
        length = _native_frame_length(self.ds)
        self._file.seek(self._value_at + (number - 1) * length)
        return _little_endian(self._file.read(length), self.ds, self.syntax)

    def _encapsulated(self, value_at: int, number: int) -> bytes:
        starts = self._fragment_starts(value_at)
        if starts is None:  # an offset table says where each frame is, or frames span fragments
            self._file.seek(value_at)
            return get_frame(self._file, number - 1, number_of_frames=self.count, extended_offsets=_extended_offsets(self.ds))
        self._file.seek(starts[number - 1] + 4)  # past the item tag to its length
        (length,) = struct.unpack("<L", self._file.read(4))
        return self._file.read(length)

    def _fragment_starts(self, value_at: int) -> list[int] | None:
        """With no offset table and one fragment per frame, where each fragment starts, found once:
        pydicom would walk every fragment again for each frame asked for (a list of 1,000 frames
        of a 10,000-frame cine: ten million item headers)."""
        if self._starts is None:
            self._starts = self._one_fragment_per_frame(value_at)
        return self._starts or None

    def _one_fragment_per_frame(self, value_at: int) -> list[int]:
        if _extended_offsets(self.ds) is not None:
            return []
        self._file.seek(value_at + 4)  # the Basic Offset Table item's length
        (table,) = struct.unpack("<L", self._file.read(4))
        if table:
            return []
        count, starts = parse_fragments(self._file)
        return starts if count == self.count else []


def _pixel_value_start(f: BinaryIO, syntax: UID) -> int | None:
    """Where Pixel Data's value starts in `f`, which pydicom's stop_before_pixels left at the
    element's tag; None when the next element is not Pixel Data."""
    at = f.tell()
    head = f.read(8)
    order = "<" if syntax.is_little_endian else ">"
    if len(head) < 8 or struct.unpack(order + "HH", head[:4]) != (0x7FE0, 0x0010):
        return None
    # explicit VR: tag, VR, 2 reserved bytes, 4-byte length (OB/OW); implicit: tag, 4-byte length
    return at + (8 if syntax.is_implicit_VR else 12)


def _extended_offsets(ds: Dataset) -> tuple[bytes, bytes] | None:
    if "ExtendedOffsetTable" in ds and "ExtendedOffsetTableLengths" in ds:
        return ds.ExtendedOffsetTable, ds.ExtendedOffsetTableLengths
    return None


def _frame_in_memory(ds: Dataset, number: int, syntax: UID) -> bytes:
    if syntax.is_encapsulated:
        return get_frame(ds.PixelData, number - 1, number_of_frames=_frame_count(ds))
    return _native_frame(ds, number, syntax)


def _native_frame_length(ds: Dataset) -> int:
    return int(ds.Rows) * int(ds.Columns) * int(ds.get("SamplesPerPixel", 1) or 1) * int(ds.BitsAllocated) // 8


def _little_endian(data: bytes, ds: Dataset, syntax: UID) -> bytes:
    bits = int(ds.BitsAllocated)
    if syntax == ExplicitVRBigEndian and bits > 8:
        return np.frombuffer(data, dtype=f">u{bits // 8}").astype(f"<u{bits // 8}").tobytes()
    return data


def _native_frame(ds: Dataset, number: int, syntax: UID) -> bytes:
    if int(ds.BitsAllocated) == 1:
        # 1-bit frames need not start on a byte boundary; unpack the one asked for
        return pixel_array(ds, index=number - 1).astype(np.uint8).tobytes()
    length = _native_frame_length(ds)
    return _little_endian(ds.PixelData[(number - 1) * length : number * length], ds, syntax)


def decoded_frames(pool: DecodePool, path: Path, numbers: list[int], deadline: float | None = None) -> Frames:
    """The frames as native little-endian bytes (what application/octet-stream means by default):
    compressed ones decoded by a worker of `pool` (done by `deadline`, time.monotonic(), if given),
    native ones cut out here."""
    if UID(str(read_file_meta_info(path).TransferSyntaxUID)).is_encapsulated:
        return pool.run(decode_frames, str(path), numbers, deadline=deadline)
    return decode_frames(path, numbers)


def decode_frames(path: str | Path, numbers: list[int]) -> Frames:
    ds = open_pixels(path)
    _check(ds, numbers)
    syntax = UID(str(ds.file_meta.TransferSyntaxUID))
    if not syntax.is_encapsulated:
        return Frames(ExplicitVRLittleEndian, [_native_frame(ds, n, syntax) for n in numbers])
    out = []
    for n in numbers:
        # colour stays as encoded (no YBR->RGB here)
        array = frame_array(path, ds, n - 1, raw=True)
        out.append(np.ascontiguousarray(array).astype(array.dtype.newbyteorder("<")).tobytes())
        progress()
    return Frames(ExplicitVRLittleEndian, out)
