"""Objects leaving the archive (C-GET, C-MOVE): in the stored transfer syntax when the receiver
accepted it, else decompressed to one it did accept, else refused with a reason."""

from __future__ import annotations

import tempfile
from collections.abc import Collection
from pathlib import Path

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import UID, ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from archive.pixels.decode_pool import DecodePool
from archive.pixels.transcode import uncompressed_copy

# what every storage SCP must accept (PS3.5 10.1), and what the archive can always produce
FALLBACK_SYNTAXES = [str(ExplicitVRLittleEndian), str(ImplicitVRLittleEndian)]


class NoCommonSyntax(ValueError):
    """The receiver accepted no transfer syntax this object can be sent in."""


def _uncompressed(syntax: str) -> bool:
    uid = UID(syntax)
    return uid.is_transfer_syntax and not uid.is_compressed and not uid.is_deflated


def sendable(stored_syntax: str, accepted: Collection[str]) -> bool:
    """Whether an object stored in `stored_syntax` can go to a receiver that accepted `accepted`."""
    return stored_syntax in accepted or any(_uncompressed(s) for s in accepted)


def dataset_to_send(path: Path, stored_syntax: str, accepted: Collection[str], pool: DecodePool, scratch_dir: Path) -> Dataset:
    """The object as a Dataset the association can carry. pynetdicom converts between uncompressed
    syntaxes itself; a compressed object the receiver cannot take is decompressed first, by a
    memory-bounded worker of `pool` into `scratch_dir` (DecodeRefused when it cannot be)."""
    if not sendable(stored_syntax, accepted):
        raise NoCommonSyntax(
            f"stored as {UID(stored_syntax).name}; the receiver accepted only " + ", ".join(UID(s).name for s in sorted(accepted))
        )
    if stored_syntax not in accepted and not _uncompressed(stored_syntax):
        return _decompressed(path, pool, scratch_dir)
    ds = dcmread(path)
    if stored_syntax == ExplicitVRBigEndian and ExplicitVRBigEndian not in accepted:
        _to_little_endian(ds)
    return ds


def _decompressed(path: Path, pool: DecodePool, scratch_dir: Path) -> Dataset:
    # the copy keeps the SOP Instance UID: a change of transfer syntax is the same object (PS3.5 10)
    with tempfile.TemporaryDirectory(dir=scratch_dir, prefix="outbound-") as scratch:
        copy = Path(scratch) / "uncompressed.dcm"
        uncompressed_copy(pool, path, copy)
        return dcmread(copy)  # read whole: the file goes with the directory


def _to_little_endian(ds: Dataset) -> None:
    """Every element decoded from its big endian bytes first (Pixel Data through the decoded array,
    its words swapped), then the dataset declared little endian, so it is encoded as such."""
    if "PixelData" in ds:
        pixels = ds.pixel_array
        ds.PixelData = pixels.astype(pixels.dtype.newbyteorder("<")).tobytes()
    for _ in ds.iterall():  # converts each raw (still big endian) element to its value
        pass
    ds.set_original_encoding(False, True, ds.original_character_set)
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
