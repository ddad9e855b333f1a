"""Is a re-sent object the one already stored, in another transfer syntax? A modality that resends
after a failure may negotiate a different syntax; PS3.5 10 says the object keeps its identity, so
the archive should call it a duplicate, not a conflict.

Answering means decoding both objects' pixels, and the re-sent one is untrusted: the comparison
runs in a decode pool worker (archive/pixels/decode_pool.py), frame by frame, where a hostile codestream
is refused before decoding (archive/pixels/codestream.py) or costs one worker process, never the
receiving one."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pydicom.dataset import Dataset

from archive.dicom.dicom_json import json_elements
from archive.pixels.codestream import CodestreamMismatch
from archive.pixels.decode_pool import DecodePool, progress
from archive.pixels.frames import frame_array, open_pixels

MAX_COMPARED_PIXEL_BYTES = 256 * 2**20  # larger objects are not decoded twice to be compared: a conflict


@dataclass(frozen=True)
class Comparison:
    same: bool
    # why the received object is not acceptable at all (a frame's codestream disagrees with its
    # header): whatever is stored, it is refused as invalid, not as a conflict
    refusal: str | None = None


def same_object(pool: DecodePool, stored: Path, received: Path) -> Comparison:
    """Same attribute values and, when both have pixels, the same decoded pixels; decided by a
    worker of `pool` (DecodeRefused when it cannot be)."""
    return pool.run(compare_files, str(stored), str(received))


def compare_files(stored: str, received: str) -> Comparison:
    """The comparison itself, in whatever process calls it (a decode worker: see same_object)."""
    a, b = open_pixels(stored), open_pixels(received)  # pixels stay on disk until a frame is asked for
    if _attributes(a) != _attributes(b) or ("PixelData" in a) != ("PixelData" in b):
        return Comparison(False)
    if "PixelData" not in a:
        return Comparison(True)
    if _pixel_bytes(a) > MAX_COMPARED_PIXEL_BYTES:
        return Comparison(False)
    for index in range(_frames(a)):
        # the received frame first: a forged one is refused before the stored one costs a decode
        try:
            theirs = frame_array(received, b, index)
        except CodestreamMismatch as err:
            return Comparison(False, f"frame {index + 1}: {err}")
        ours = frame_array(stored, a, index)
        progress()  # the pool's time limit then applies per frame
        if ours.shape != theirs.shape or not np.array_equal(ours, theirs):
            return Comparison(False)
    return Comparison(True)


def _attributes(ds: Dataset) -> dict[str, Any]:
    """The attributes as values (DICOM JSON), whatever the encoding, pixels and file meta aside. The
    VR is left out: an implicit VR copy gets private elements' VRs from a dictionary guess."""
    return {
        tag: {k: v for k, v in value.items() if k != "vr"}
        for tag, value in json_elements(ds, bulk_data_threshold=2**31).items()
        if not tag.startswith("0002") and tag != "7FE00010"
    }


def _frames(ds: Dataset) -> int:
    return int(ds.get("NumberOfFrames", 1) or 1)


def _pixel_bytes(ds: Dataset) -> int:
    try:
        return int(ds.Rows) * int(ds.Columns) * int(ds.get("SamplesPerPixel", 1) or 1) * int(ds.BitsAllocated) // 8 * _frames(ds)
    except (AttributeError, TypeError, ValueError):
        return 0
