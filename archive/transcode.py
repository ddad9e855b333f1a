"""Transcoding: an uncompressed Explicit VR Little Endian copy of a compressed object."""

from __future__ import annotations

from io import BytesIO
from pathlib import Path

from pydicom import dcmread
from pydicom.uid import UID, ExplicitVRLittleEndian


def needs_uncompressed_copy(transfer_syntax: str) -> bool:
    return UID(transfer_syntax).is_compressed


def uncompressed_bytes(path: Path) -> bytes:
    """Decode every frame with pydicom's pixel backends (pylibjpeg, openjpeg, ...) and re-encode."""
    ds = dcmread(path)
    # sets Explicit VR Little Endian and fixes the pixel module attributes. pydicom would also mint
    # a new SOP Instance UID; a change of transfer syntax keeps the object's identity (PS3.5 10),
    # and the copy must answer to the UID the index holds.
    ds.decompress(generate_instance_uid=False)
    out = BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


TARGET_SYNTAX = str(ExplicitVRLittleEndian)
