"""Frame lists and frames without a stack: a list is refused when it repeats a frame, names more
frames than the object has or is too long; frames read one at a time from the file equal pydicom's
reading of the whole object; one request's decodes share one time budget; the decode gate keeps a
tenant to its share while another tenant is admitted."""

from __future__ import annotations

import asyncio
import gc
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import psutil
import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.encaps import get_frame
from pydicom.pixels import pixel_array

from archive.blobstore.local import LocalBlobStore
from archive.pixels.decode_pool import DecodePool, DecodeRefused
from archive.pixels.frame_list import MAX_FRAME_LIST_CHARS, BadFrameList, parse_frame_list
from archive.pixels.frames import FrameNotFound, FrameReader
from archive.pixels.limits import INTERPRETER_BYTES, DecodeLimits
from serve.decode_gate import DecodeBusy, DecodeGate
from serve.frame_stream import OpenedFrames

DATA = ("pydicom-data", "data_store", "data")
# native (little, big endian, 1-bit, planar RGB, 16- and 32-bit), and compressed (RLE, JPEG 2000,
# JPEG-LS, JPEG baseline with 120 frames), single- and multi-frame
FILES = [
    "emri_small.dcm",
    "emri_small_big_endian.dcm",
    "liver.dcm",
    "SC_rgb_expb_32bit_2frame.dcm",
    "OBXXXX1A_2frame.dcm",
    "SC_rgb_16bit_2frame.dcm",
    "US1_UNCR.dcm",
    "emri_small_RLE.dcm",
    "emri_small_jpeg_2k_lossless.dcm",
    "emri_small_jpeg_ls_lossless.dcm",
    "color3d_jpeg_baseline.dcm",
    "MR2_J2KR.dcm",
]


def real(data_dir: Path, name: str) -> Path:
    return data_dir.joinpath(*DATA, name)


@pytest.mark.parametrize(
    "text, words",
    [
        ("1,2,1", "frame 1 is listed more than once"),
        (",".join(["1"] * 300), "frame 1 is listed more than once"),
        ("1,x", "must be numbers"),
        (",", "no frame numbers"),
        ("1," * (MAX_FRAME_LIST_CHARS // 2 + 1), f"at most {MAX_FRAME_LIST_CHARS}"),
    ],
)
def test_a_bad_frame_list_is_refused_with_a_reason(text, words):
    with pytest.raises(BadFrameList, match=words):
        parse_frame_list(text)


def test_a_frame_list_keeps_its_order():
    assert parse_frame_list("3, 1,2") == [3, 1, 2]


def test_more_numbers_than_frames_is_a_bad_list_and_a_missing_frame_is_not_found(data_dir):
    with FrameReader(real(data_dir, "emri_small_big_endian.dcm")) as reader:  # 10 frames
        with pytest.raises(BadFrameList, match="11 frame numbers given; the instance has 10"):
            reader.check(list(range(1, 12)))
        with pytest.raises(FrameNotFound, match="frame 11 does not exist"):
            reader.check([1, 11])


def _expected(path: Path, number: int) -> bytes:
    """What WADO-RS sends as stored: the compressed frame, or the native one little endian."""
    ds = dcmread(path)
    count = int(ds.get("NumberOfFrames", 1) or 1)
    if ds.file_meta.TransferSyntaxUID.is_encapsulated:
        return get_frame(ds.PixelData, number - 1, number_of_frames=count)
    array = pixel_array(ds, index=number - 1, raw=True)
    if ds.get("PlanarConfiguration") == 1 and array.ndim == 3:
        array = array.transpose(2, 0, 1)
    if ds.BitsAllocated == 1:
        return array.astype(np.uint8).tobytes()
    return np.ascontiguousarray(array).astype(array.dtype.newbyteorder("<")).tobytes()


# pydicom's own real files: Deflated Explicit VR (read whole: no file offset means anything in it),
# Implicit VR
PYDICOM_FILES = ["image_dfl.dcm", "MR_small_implicit.dcm"]


@pytest.mark.parametrize("name", FILES + PYDICOM_FILES)
def test_frames_read_alone_equal_pydicoms_whole_object(data_dir, name):
    path = Path(str(get_testdata_file(name))) if name in PYDICOM_FILES else real(data_dir, name)
    with FrameReader(path) as reader:
        numbers = list(range(reader.count, 0, -1))  # backwards: each frame is found on its own
        reader.check(numbers)
        for n in numbers:
            assert reader.frame(n) == _expected(path, n), f"{name} frame {n}"


@pytest.fixture(scope="module")
def pool() -> Iterator[DecodePool]:
    pool = DecodePool(DecodeLimits(INTERPRETER_BYTES + 2**30, 30.0, 1))
    yield pool
    pool.close()


def test_the_calls_of_one_request_share_one_time_budget(pool):
    pool.run(time.sleep, 0)  # the worker's start is not part of the budget
    deadline = time.monotonic() + 1.0
    pool.run(time.sleep, 0.6, deadline=deadline)  # alone, each call is far inside the 30 s timeout
    with pytest.raises(DecodeRefused) as refused:
        pool.run(time.sleep, 0.6, deadline=deadline)
    assert refused.value.reason == "timeout"
    with pytest.raises(DecodeRefused, match="this request's decoding took longer"):
        pool.run(time.sleep, 0, deadline=deadline)  # spent: refused before a worker is taken
    assert pool.run(time.sleep, 0.6) is None  # the pool itself serves on


def test_a_tenant_over_its_share_waits_then_is_busy_while_another_tenant_is_admitted():
    async def scenario() -> None:
        gate = DecodeGate(threads=4, per_tenant=2, wait_seconds=0.5)
        release = threading.Event()
        try:
            held = [asyncio.ensure_future(gate.run("a", release.wait)) for _ in range(2)]
            await asyncio.sleep(0)  # both admitted: the share of "a" is taken
            with pytest.raises(DecodeBusy, match="tenant 'a' has its 2 decodes under way"):
                await gate.run("a", lambda: "never run")
            assert await gate.run("b", lambda: "b answered") == "b answered"
            assert not any(task.done() for task in held)  # "b" went first, "a" still holds its share
            release.set()
            assert await asyncio.gather(*held) == [True, True]
            assert await gate.run("a", lambda: "a again") == "a again"  # its share came back
        finally:
            release.set()
            gate.close()

    asyncio.run(scenario())


def _open_here(path: Path) -> bool:
    return any(Path(f.path) == path for f in psutil.Process().open_files())


def test_frames_opened_for_an_answer_are_closed_when_sent_or_dropped_unsent(data_dir, tmp_path):
    blobs = LocalBlobStore(tmp_path / "blobs")
    copy = tmp_path / "blobs" / ".spool" / "cine.dcm"  # stage_file adopts (moves) its file: never the shared original
    shutil.copyfile(real(data_dir, "emri_small_big_endian.dcm"), copy)
    blobs.commit(blobs.stage_file(copy), "t/cine.dcm")
    stored = tmp_path / "blobs" / "t" / "cine.dcm"
    opened = OpenedFrames(blobs, "t/cine.dcm", [2, 1])
    assert _open_here(stored) and len(opened.stored([2])[0]) == 64 * 64 * 2
    opened.close()
    assert not _open_here(stored)
    OpenedFrames(blobs, "t/cine.dcm", [1])  # an answer whose stream never started: nothing closes it but its end
    gc.collect()
    assert not _open_here(stored)
