"""Frames of a stored object: cut out of native Pixel Data, or taken as the compressed fragments."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.encaps import get_frame
from pydicom.filereader import read_file_meta_info
from pydicom.pixels import pixel_array
from pydicom.uid import UID, ExplicitVRBigEndian, ExplicitVRLittleEndian

from archive.decode_pool import CallerError, DecodePool, progress

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
    count = _frame_count(ds)
    for n in numbers:
        if n < 1 or n > count:
            raise FrameNotFound(f"frame {n} does not exist: the instance has {count} frame(s)")
    return count


def stored_frames(path: Path, numbers: list[int]) -> Frames:
    """The frames as stored: compressed fragments, or native bytes (little endian)."""
    ds = dcmread(path)
    count = _check(ds, numbers)
    syntax = UID(str(ds.file_meta.TransferSyntaxUID))
    if syntax.is_encapsulated:
        return Frames(str(syntax), [get_frame(ds.PixelData, n - 1, number_of_frames=count) for n in numbers])
    return Frames(ExplicitVRLittleEndian, [_native_frame(ds, n, syntax) for n in numbers])


def _native_frame(ds: Dataset, number: int, syntax: UID) -> bytes:
    bits = int(ds.BitsAllocated)
    size = int(ds.Rows) * int(ds.Columns) * int(ds.get("SamplesPerPixel", 1) or 1)
    if bits == 1:
        # 1-bit frames need not start on a byte boundary; unpack the one asked for
        return pixel_array(ds, index=number - 1).astype(np.uint8).tobytes()
    length = size * bits // 8
    data = ds.PixelData[(number - 1) * length: number * length]
    if syntax == ExplicitVRBigEndian and bits > 8:
        data = np.frombuffer(data, dtype=f">u{bits // 8}").astype(f"<u{bits // 8}").tobytes()
    return data


def decoded_frames(pool: DecodePool, path: Path, numbers: list[int]) -> Frames:
    """The frames as native little-endian bytes (what application/octet-stream means by default):
    compressed ones decoded by a worker of `pool`, native ones cut out here."""
    if UID(str(read_file_meta_info(path).TransferSyntaxUID)).is_encapsulated:
        return pool.run(decode_frames, str(path), numbers)
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
