"""Is a re-sent object the one already stored, in another transfer syntax? A modality that resends
after a failure may negotiate a different syntax; PS3.5 10 says the object keeps its identity, so
the archive should call it a duplicate, not a conflict."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydicom import dcmread
from pydicom.dataset import Dataset

from archive.dicom_json import json_elements

MAX_COMPARED_PIXEL_BYTES = 256 * 2**20  # larger objects are not decoded twice to be compared: a conflict


def _attributes(ds: Dataset) -> dict[str, Any]:
    """The attributes as values (DICOM JSON), whatever the encoding, pixels and file meta aside. The
    VR is left out: an implicit VR copy gets private elements' VRs from a dictionary guess."""
    return {tag: {k: v for k, v in value.items() if k != "vr"}
            for tag, value in json_elements(ds, bulk_data_threshold=2**31).items()
            if not tag.startswith("0002") and tag != "7FE00010"}


def _pixel_bytes(ds: Dataset) -> int:
    try:
        frames = int(ds.get("NumberOfFrames", 1) or 1)
        return int(ds.Rows) * int(ds.Columns) * int(ds.get("SamplesPerPixel", 1) or 1) * int(ds.BitsAllocated) // 8 * frames
    except (AttributeError, TypeError, ValueError):
        return 0


def same_object(stored: Path, received: Path) -> bool:
    """Same attribute values and, when both have pixels, the same decoded pixels."""
    a, b = dcmread(stored), dcmread(received)
    if _attributes(a) != _attributes(b):
        return False
    if ("PixelData" in a) != ("PixelData" in b):
        return False
    if "PixelData" not in a:
        return True
    if _pixel_bytes(a) > MAX_COMPARED_PIXEL_BYTES:
        return False
    return bool((a.pixel_array == b.pixel_array).all())
