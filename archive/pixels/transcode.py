"""Transcoding: an uncompressed Explicit VR Little Endian copy of a compressed object."""

from __future__ import annotations

import struct
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any, BinaryIO

import numpy as np
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.pixels.decoders.base import get_decoder
from pydicom.pixels.utils import as_pixel_options
from pydicom.uid import UID, ExplicitVRLittleEndian
from pydicom.valuerep import VR

from archive.pixels.decode_pool import DecodePool, progress
from archive.pixels.frames import NoPixelData, open_pixels

TARGET_SYNTAX = str(ExplicitVRLittleEndian)
PIXEL_DATA = (0x7FE0, 0x0010)


def needs_uncompressed_copy(transfer_syntax: str) -> bool:
    return UID(transfer_syntax).is_compressed


def uncompressed_copy(pool: DecodePool, source: Path, target: Path) -> None:
    """Write `target` as `source` decompressed, by a worker of `pool` (DecodeRefused if it cannot)."""
    pool.run(write_uncompressed, str(source), str(target))


def write_uncompressed(source: str, target: str) -> None:
    """Frames are decoded one at a time into a scratch file beside `target`, which then becomes the
    Pixel Data of the copy: memory holds one frame, however many the object has. A change of
    transfer syntax keeps the object's identity (PS3.5 10), so the SOP Instance UID stays."""
    ds = open_pixels(source)
    if "PixelData" not in ds:
        raise NoPixelData("the instance has no Pixel Data to decompress")
    _check_encodable(ds)
    with open(source, "rb") as f, tempfile.TemporaryFile(dir=Path(target).parent) as pixels:
        count, length, pixel_module = _decode_into(_decoded_frames(f), pixels)
        if length % 2:
            pixels.write(b"\0")
        pixels.seek(0)
        _describe_native(ds, pixel_module, count)
        ds.PixelData = pixels
        ds["PixelData"].is_undefined_length = False
        ds["PixelData"].VR = VR.OB if int(ds.BitsAllocated) <= 8 else VR.OW
        ds.save_as(target, enforce_file_format=True)


def _check_encodable(ds: Dataset) -> None:
    """Native Pixel Data has a 32-bit length (PS3.5 7.1.1); receipt admits more (max_pixel_bytes),
    so say so before decoding gigabytes."""
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    length = frames * int(ds.Rows) * int(ds.Columns) * int(ds.get("SamplesPerPixel", 1) or 1) * int(ds.BitsAllocated) // 8
    if length >= 2**32 - 1:
        raise ValueError(f"decompressed, its Pixel Data would be {length} bytes: more than DICOM can encode uncompressed")


def _decoded_frames(f: BinaryIO) -> Iterator[tuple[np.ndarray, dict[str, Any]]]:
    """Each frame decoded as pydicom's decompress() would (YBR to RGB), read from the file alone."""
    header = dcmread(f, stop_before_pixels=True)  # leaves f at the Pixel Data element
    group, element, vr, _, _ = struct.unpack("<HH2sHI", f.read(12))  # encapsulated: explicit VR little endian
    if (group, element) != PIXEL_DATA:
        raise NoPixelData("the instance has no Pixel Data to decompress")
    syntax = UID(str(header.file_meta.TransferSyntaxUID))
    options = as_pixel_options(header, transfer_syntax_uid=syntax, pixel_keyword="PixelData", pixel_vr=vr.decode())
    yield from get_decoder(syntax).iter_array(f, as_rgb=True, validate=True, **options)


def _decode_into(frames: Iterator[tuple[np.ndarray, dict[str, Any]]], out: IO[bytes]) -> tuple[int, int, dict[str, Any]]:
    count, length, pixel_module = 0, 0, {}
    for array, info in frames:
        pixel_module = info
        data = np.ascontiguousarray(array)
        out.write(data.data)
        count, length = count + 1, length + data.nbytes
        progress()
    return count, length, pixel_module


def _describe_native(ds: Dataset, pixel_module: dict[str, Any], count: int) -> None:
    """The Image Pixel attributes of the decoded frames, as pydicom's decompress() sets them."""
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.PhotometricInterpretation = str(pixel_module["photometric_interpretation"])
    if int(pixel_module["samples_per_pixel"]) > 1:
        ds.PlanarConfiguration = int(pixel_module["planar_configuration"])
    if "NumberOfFrames" in ds or count > 1:
        ds.NumberOfFrames = count
