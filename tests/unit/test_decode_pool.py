"""The decode pool on its own: real compressed files decode in it exactly as in-process, a hostile
codestream or a too-small memory ceiling is refused with a reason, a stuck or crashing worker is
replaced, and the pool keeps answering afterwards."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import psutil
import pytest
from pydicom import dcmread
from pydicom.pixels import pixel_array

from archive.config.sections import DECODE_FRAME_FACTOR
from archive.config.settings import Settings
from archive.pixels.decode_pool import DecodePool, DecodeRefused, progress, worker_memory
from archive.pixels.frames import FrameNotFound, decoded_frames
from archive.pixels.limits import INTERPRETER_BYTES, DecodeLimits
from archive.pixels.render import RenderOptions, render, render_file
from archive.pixels.transcode import uncompressed_copy
from tests.pixel_bombs import J2K_SOURCE, forged_frame, frames_of, j2k_declaring, native_image, with_frames

GiB = 2**30
DATA = ("pydicom-data", "data_store", "data")
# one of each codec: JPEG 2000, JPEG lossless, RLE, JPEG-LS, JPEG baseline (YBR, 120 frames), palette RLE
COMPRESSED = [
    "MR2_J2KR.dcm",
    "JPEG-LL.dcm",
    "emri_small_RLE.dcm",
    "emri_small_jpeg_ls_lossless.dcm",
    "color3d_jpeg_baseline.dcm",
    "OBXXXX1A_rle_2frame.dcm",
    "US1_J2KR.dcm",
]


def real(data_dir: Path, name: str) -> Path:
    return data_dir.joinpath(*DATA, name)


@pytest.fixture(scope="module")
def pool() -> Iterator[DecodePool]:
    pool = DecodePool(DecodeLimits(INTERPRETER_BYTES + GiB, 30.0, 2))
    yield pool
    pool.close()


def pid_gone(pid: int, within: float = 5.0) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
            return True
        time.sleep(0.05)
    return False


def steady(steps: int, pause: float) -> int:
    """Runs in a worker: a long job that reports progress between steps."""
    for _ in range(steps):
        time.sleep(pause)
        progress()
    return steps


@pytest.mark.parametrize("name", COMPRESSED)
def test_real_compressed_files_decode_in_the_pool_as_in_process(pool, data_dir, name):
    path = real(data_dir, name)
    assert render(pool, path, 1, RenderOptions()) == render_file(str(path), 1, RenderOptions())
    [frame] = decoded_frames(pool, path, [1]).frames
    assert frame == np.ascontiguousarray(pixel_array(dcmread(path), index=0, raw=True)).tobytes()


@pytest.mark.parametrize(
    "name", ["color3d_jpeg_baseline.dcm", "emri_small_jpeg_ls_lossless.dcm", "OBXXXX1A_rle_2frame.dcm", "US1_J2KR.dcm"]
)
def test_decompressed_copy_matches_pydicoms_and_keeps_the_identity(pool, data_dir, tmp_path, name):
    path, target = real(data_dir, name), tmp_path / "copy.dcm"
    uncompressed_copy(pool, path, target)
    copy, expected = dcmread(target), dcmread(path)
    expected.decompress(generate_instance_uid=False)
    assert copy.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.1"
    assert copy.SOPInstanceUID == expected.SOPInstanceUID
    assert copy.PhotometricInterpretation == expected.PhotometricInterpretation
    assert copy.get("NumberOfFrames") == expected.get("NumberOfFrames")
    assert np.array_equal(copy.pixel_array, expected.pixel_array)
    assert list(tmp_path.iterdir()) == [target]  # the frames' scratch file is gone


def test_a_codestream_declaring_60000_squared_is_refused_before_decoding(pool, data_dir, tmp_path):
    """Refused by its SIZ marker (archive/pixels/codestream.py) before openjpeg sizes anything."""
    bomb = tmp_path / "bomb.dcm"
    bomb.write_bytes(j2k_declaring(real(data_dir, J2K_SOURCE[-1]), 60000))
    assert dcmread(bomb).Rows == 1024  # what receipt sees
    for attempt in (
        lambda: render(pool, bomb, 1, RenderOptions()),
        lambda: decoded_frames(pool, bomb, [1]),
        lambda: uncompressed_copy(pool, bomb, tmp_path / "copy.dcm"),
    ):
        with pytest.raises(DecodeRefused) as refused:
            attempt()
        assert refused.value.reason == "undecodable" and refused.value.deterministic
        assert "SIZ marker describes 60000 x 60000 pixels" in str(refused.value)
        assert "1024 x 1024" in str(refused.value)
    assert render(pool, real(data_dir, "MR2_J2KR.dcm"), 1, RenderOptions()).startswith(b"\xff\xd8")


def test_a_forged_frame_deep_in_a_multiframe_object_is_refused(pool, data_dir, tmp_path):
    """Each frame is checked as it is decoded, not only the first: frame 120 of a JPEG baseline cine."""
    source = real(data_dir, "color3d_jpeg_baseline.dcm")
    frames = frames_of(source)
    forged = tmp_path / "forged.dcm"
    forged.write_bytes(with_frames(source, [*frames[:-1], forged_frame(frames[-1], 20000, 20000)]))
    assert len(decoded_frames(pool, forged, [1, 119]).frames) == 2
    for attempt in (
        lambda: decoded_frames(pool, forged, [120]),
        lambda: render(pool, forged, 120, RenderOptions()),
        lambda: uncompressed_copy(pool, forged, tmp_path / "copy.dcm"),
    ):
        with pytest.raises(DecodeRefused, match="SOF0 marker describes 20000 x 20000") as refused:
            attempt()
        assert refused.value.reason == "undecodable"


def test_a_valid_object_over_a_small_ceiling_is_refused_and_its_worker_replaced(data_dir, tmp_path):
    big = tmp_path / "big.dcm"
    big.write_bytes(native_image(4096, 4096))  # 32 MiB of pixels; rendering holds several copies
    with DecodePool(DecodeLimits(INTERPRETER_BYTES, 30.0, 1)) as measuring:
        render(measuring, real(data_dir, "MR2_UNCR.dcm"), 1, RenderOptions())
        peak = measuring.run(worker_memory)["VmPeak"]
    small = DecodePool(DecodeLimits(peak + 24 * 2**20, 30.0, 1))
    try:
        before = small.run(os.getpid)
        with pytest.raises(DecodeRefused) as refused:
            render(small, big, 1, RenderOptions())
        assert refused.value.reason == "too_large"
        assert pid_gone(before)
        assert render(small, real(data_dir, "MR2_UNCR.dcm"), 1, RenderOptions()).startswith(b"\xff\xd8")
        assert small.run(os.getpid) != before
    finally:
        small.close()


def test_a_decode_over_the_time_limit_is_stopped_and_the_pool_keeps_working(data_dir, tmp_path):
    slow = tmp_path / "slow.dcm"
    slow.write_bytes(j2k_declaring(real(data_dir, J2K_SOURCE[-1]), 8000, tile=0, header_too=True))  # ~0.4 s of openjpeg
    with DecodePool(DecodeLimits(INTERPRETER_BYTES + GiB, 0.05, 1)) as quick:
        worker = quick.run(os.getpid)
        with pytest.raises(DecodeRefused) as refused:
            render(quick, slow, 1, RenderOptions())
        assert refused.value.reason == "timeout" and not refused.value.deterministic
        assert pid_gone(worker)
        assert quick.run(os.getpid) != worker


def test_progress_gives_each_step_the_time_limit():
    with DecodePool(DecodeLimits(INTERPRETER_BYTES + GiB, 1.0, 1)) as patient:
        assert patient.run(steady, 0, 0) == 0  # the worker imports this module once, outside the measure
        assert patient.run(steady, 5, 0.4) == 5  # 2 s in all, never 1 s without news
        with pytest.raises(DecodeRefused, match="decode_timeout_seconds=1"):
            patient.run(time.sleep, 3)


def test_a_worker_that_crashes_is_reported_and_replaced(pool, data_dir):
    with pytest.raises(DecodeRefused) as refused:
        pool.run(os.abort)
    assert refused.value.reason == "crashed" and "SIGABRT" in str(refused.value)
    assert render(pool, real(data_dir, "MR2_J2KR.dcm"), 1, RenderOptions()).startswith(b"\xff\xd8")


def test_a_request_error_passes_through_and_keeps_the_worker(data_dir):
    with DecodePool(DecodeLimits(INTERPRETER_BYTES + GiB, 30.0, 1)) as single:
        worker = single.run(os.getpid)
        with pytest.raises(FrameNotFound, match="frame 7 does not exist"):
            render(single, real(data_dir, "MR2_J2KR.dcm"), 7, RenderOptions())
        assert single.run(os.getpid) == worker


def test_concurrent_callers_share_the_workers(pool, data_dir):
    path, results, errors = real(data_dir, "US1_J2KR.dcm"), [], []

    def draw() -> None:
        try:
            results.append(render(pool, path, 1, RenderOptions(viewport=(64, 64))))
        except Exception as err:  # noqa: BLE001 - reported below
            errors.append(err)

    threads = [threading.Thread(target=draw) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(set(results)) == 1


def test_a_ceiling_below_the_interpreter_is_reported_not_hung():
    with DecodePool(DecodeLimits(64 * 2**20, 30.0, 1)) as starved:
        with pytest.raises(DecodeRefused) as refused:
            starved.run(os.getpid)
    assert refused.value.reason == "unavailable" and "decode_memory_bytes=67108864" in str(refused.value)


def test_a_warm_worker_fits_the_interpreter_margin(pool):
    sizes = pool.run(worker_memory)
    # the margin in archive/pixels/decode_pool.py was chosen from this: ~160 MB measured
    assert sizes["VmSize"] < INTERPRETER_BYTES / 2, sizes


def test_workers_exit_when_their_caller_is_killed():
    script = textwrap.dedent("""
        import os, signal
        from archive.pixels.limits import DecodeLimits
        from archive.pixels.decode_pool import DecodePool
        pool = DecodePool(DecodeLimits(2**30, 30.0, 1))
        print(pool.run(os.getpid), flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, cwd=Path(__file__).resolve().parents[2]
    )
    worker = int(done.stdout.split()[0])
    assert pid_gone(worker), "an orphaned decode worker outlived its caller"


def test_the_default_ceiling_follows_max_frame_bytes():
    limits = Settings(max_frame_bytes=64 * 2**20).decode.pool_limits
    assert limits.memory_bytes == INTERPRETER_BYTES + DECODE_FRAME_FACTOR * 64 * 2**20
    assert Settings(decode_memory_bytes=3 * GiB, decode_workers=4).decode.pool_limits == DecodeLimits(3 * GiB, 60.0, 4)
