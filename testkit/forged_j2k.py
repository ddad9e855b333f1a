"""The re-send bomb (issue 27 item 2), shared by its test and its benchmark: pydicom's 6 KB JPEG
2000 MR under fresh UIDs, and the same object whose SIZ marker claims SIDE x SIDE pixels in
TILE x TILE tiles (one coded: openjpeg would fill the whole canvas before failing)."""

from __future__ import annotations

import io
import struct
from pathlib import Path

import pydicom
from pydicom import dcmread
from pydicom.encaps import encapsulate, get_frame
from pydicom.uid import generate_uid

SMALL_J2K = Path(pydicom.__file__).parent / "data" / "test_files" / "MR_small_jp2klossless.dcm"  # 64 x 64, 6 KB
SIDE, TILE = 20000, 1024


def saved(ds: pydicom.Dataset) -> bytes:
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def small_and_forged() -> tuple[bytes, bytes]:
    """The small J2K under fresh UIDs, and the same object (same UIDs) with a forged SIZ marker."""
    ds = dcmread(SMALL_J2K)
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    original = saved(ds)
    frame = bytearray(get_frame(ds.PixelData, 0, number_of_frames=1))
    at = frame.find(b"\xff\x51")
    struct.pack_into(">IIIIII", frame, at + 6, SIDE, SIDE, 0, 0, TILE, TILE)  # Xsiz, Ysiz, offsets, tile size
    ds.PixelData = encapsulate([bytes(frame)])
    return original, saved(ds)
