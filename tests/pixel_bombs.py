"""Objects whose pixels cost more to decode than their DICOM header admits: a real JPEG 2000 file
whose codestream SIZ marker is rewritten to declare a larger image. The header (Rows, Columns) is
untouched, so receipt's limits pass it; openjpeg believes the codestream and sizes its buffers from
it, which is what the decode pool's memory ceiling is for."""

from __future__ import annotations

import io
import struct
from pathlib import Path

import numpy as np
from pydicom import dcmread
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate, generate_frames, get_frame
from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

SIZ = b"\xff\x51"
J2K_SOURCE = ("pydicom-data", "data_store", "data", "MR2_J2KR.dcm")  # 1024 x 1024, 16 bits, one tile


def j2k_declaring(source: Path, side: int, tile: int | None = None, header_too: bool = False) -> bytes:
    """`source` (single-frame JPEG 2000) with a codestream that declares side x side pixels in
    tiles of `tile` (default: one tile that large), under fresh UIDs so it is a new object. The
    DICOM header keeps its Rows and Columns (a forgery the decode pool refuses before decoding)
    unless `header_too` (an honest large image, which it decodes)."""
    ds = dcmread(source)
    if header_too:
        ds.Rows = ds.Columns = side
    frame = bytearray(get_frame(ds.PixelData, 0, number_of_frames=1))
    at = frame.find(SIZ)
    assert at > 0, f"{source.name} has no SIZ marker"
    # after the marker: Lsiz, Rsiz (2 bytes each), then Xsiz, Ysiz, XOsiz, YOsiz, XTsiz, YTsiz (4 each)
    struct.pack_into(">II", frame, at + 6, side, side)
    if tile is None:
        struct.pack_into(">II", frame, at + 22, side, side)
    elif tile:
        struct.pack_into(">II", frame, at + 22, tile, tile)
    ds.PixelData = encapsulate([bytes(frame)])
    return _saved(_renewed(ds))


def native_image(rows: int, columns: int) -> bytes:
    """A valid uncompressed 16-bit grey image (a gradient), rows x columns."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    ds.PatientName, ds.PatientID, ds.Modality = "Bomb^Native", "NATIVE-1", "OT"
    ds.Rows, ds.Columns, ds.SamplesPerPixel, ds.PhotometricInterpretation = rows, columns, 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.PixelData = (np.arange(rows * columns, dtype=np.uint32) % 65521).astype(np.uint16).tobytes()
    return _saved(_renewed(ds))


def _renewed(ds: Dataset) -> Dataset:
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    return ds


def _saved(ds: Dataset) -> bytes:
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


SOF_MARKERS = (b"\xff\xc0", b"\xff\xc1", b"\xff\xc2", b"\xff\xc3", b"\xff\xf7")  # JPEG baseline..lossless, JPEG-LS
IHDR = b"ihdr"


def forged_frame(frame: bytes, columns: int, rows: int) -> bytes:
    """A compressed frame whose sizing header says columns x rows: JPEG 2000 SIZ (and the JP2 image
    header box when wrapped), JPEG SOF or JPEG-LS SOF55; the coded data is left as it was."""
    out = bytearray(frame)
    if IHDR in out[:200]:  # JP2: HEIGHT, WIDTH follow the box type
        struct.pack_into(">II", out, out.find(IHDR) + 4, rows, columns)
    at = out.find(SIZ)
    if out[:2] == b"\xff\x4f" or IHDR in out[:200]:
        struct.pack_into(">II", out, at + 6, columns, rows)  # Xsiz, Ysiz (XOsiz = YOsiz = 0 in real files)
        return bytes(out)
    at = min(i for i in (out.find(m) for m in SOF_MARKERS) if i > 0)
    struct.pack_into(">HH", out, at + 5, rows, columns)  # after marker, Lf and P: Y, X
    return bytes(out)


def with_frames(source: Path, frames: list[bytes], same_uids: bool = True) -> bytes:
    """`source` with its encapsulated frames replaced; the same object (UIDs) unless told otherwise."""
    ds = dcmread(source)
    ds.PixelData = encapsulate(frames)
    return _saved(ds if same_uids else _renewed(ds))


def frames_of(source: Path) -> list[bytes]:
    ds = dcmread(source)
    return list(generate_frames(ds.PixelData, number_of_frames=int(ds.get("NumberOfFrames", 1) or 1)))
