"""A re-sent object is compared with the stored one in a decode worker: the same image in another
transfer syntax is the same object, other pixels are not, and a received codestream that disagrees
with its header is refused before either object is decoded."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from pydicom import dcmread

from archive.pixels.decode_pool import DecodePool, DecodeRefused
from archive.pixels.limits import INTERPRETER_BYTES, DecodeLimits
from archive.pixels.sameness import Comparison, same_object
from archive.pixels.transcode import uncompressed_copy
from tests.pixel_bombs import forged_frame, frames_of, with_frames

DATA = ("pydicom-data", "data_store", "data")


@pytest.fixture(scope="module")
def pool() -> Iterator[DecodePool]:
    with DecodePool(DecodeLimits(INTERPRETER_BYTES + 2**30, 30.0, 1)) as pool:
        yield pool


def real(data_dir: Path, name: str) -> Path:
    return data_dir.joinpath(*DATA, name)


@pytest.mark.parametrize("name", ["MR2_J2KR.dcm", "JPEG-LL.dcm", "emri_small_jpeg_ls_lossless.dcm"])
def test_a_lossless_object_and_its_uncompressed_copy_are_the_same(pool, data_dir, tmp_path, name):
    stored, copy = real(data_dir, name), tmp_path / "copy.dcm"
    uncompressed_copy(pool, stored, copy)
    assert dcmread(copy).file_meta.TransferSyntaxUID != dcmread(stored).file_meta.TransferSyntaxUID
    assert same_object(pool, stored, copy) == same_object(pool, copy, stored) == Comparison(True)


def test_other_pixels_under_the_same_attributes_are_not(pool, data_dir, tmp_path):
    stored = real(data_dir, "color3d_jpeg_baseline.dcm")
    frames = frames_of(stored)
    swapped = tmp_path / "swapped.dcm"
    swapped.write_bytes(with_frames(stored, [*frames[:-2], frames[-1], frames[-2]]))
    assert same_object(pool, stored, stored) == Comparison(True)
    assert same_object(pool, stored, swapped) == Comparison(False)


def test_a_received_codestream_larger_than_its_header_is_refused_before_decoding(pool, data_dir, tmp_path):
    stored = real(data_dir, "MR2_J2KR.dcm")
    forged = tmp_path / "forged.dcm"
    forged.write_bytes(with_frames(stored, [forged_frame(frames_of(stored)[0], 20000, 20000)]))
    compared = same_object(pool, stored, forged)
    assert not compared.same and compared.refusal
    assert compared.refusal.startswith("frame 1: the JPEG 2000 SIZ marker describes 20000 x 20000 pixels")


def test_a_stored_object_that_cannot_be_decoded_is_a_refusal_with_a_reason(pool, data_dir, tmp_path):
    """Only the received object's codestream makes it invalid; a broken stored one is the pool's refusal."""
    source = real(data_dir, "MR2_J2KR.dcm")
    stored = tmp_path / "stored.dcm"
    stored.write_bytes(with_frames(source, [forged_frame(frames_of(source)[0], 20000, 20000)]))
    with pytest.raises(DecodeRefused, match="SIZ marker describes 20000 x 20000") as refused:
        same_object(pool, stored, source)
    assert refused.value.reason == "undecodable"
