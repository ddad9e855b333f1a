"""What to send: DICOM files found under the given paths (folders walked, zip files opened), each
with the header fields a sender needs; everything else is skipped with a note."""

from __future__ import annotations

import tempfile
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from pydicom import dcmread
from pydicom.errors import InvalidDicomError

MAX_ZIP_BYTES = 20 * 2**30  # what a zip may unpack to: a study archive, not a zip bomb


@dataclass(frozen=True)
class DicomFile:
    path: Path
    sop_class_uid: str
    sop_instance_uid: str
    transfer_syntax: str
    size: int


@dataclass
class Found:
    files: list[DicomFile]
    skipped: list[tuple[str, str]]  # (path, why)


def _walk(paths: list[Path]) -> Iterator[Path]:
    for path in paths:
        if path.is_dir():
            yield from sorted(p for p in path.rglob("*") if p.is_file())
        else:
            yield path


def _unzip(path: Path, into: Path) -> Path:
    with zipfile.ZipFile(path) as archive:
        declared = sum(info.file_size for info in archive.infolist())
        if declared > MAX_ZIP_BYTES:
            raise ValueError(f"unpacks to {declared} bytes, more than {MAX_ZIP_BYTES}")
        target = Path(tempfile.mkdtemp(prefix=path.stem + "-", dir=into))
        for info in archive.infolist():
            name = Path(info.filename)
            if info.is_dir() or name.is_absolute() or ".." in name.parts:
                continue  # no writing outside the unpack folder
            archive.extract(info, target)
        return target


def _describe(path: Path) -> DicomFile:
    ds = dcmread(path, stop_before_pixels=True, specific_tags=["SOPClassUID", "SOPInstanceUID"])
    syntax = str(getattr(ds.file_meta, "TransferSyntaxUID", "") or "")
    if not syntax or "SOPInstanceUID" not in ds or "SOPClassUID" not in ds:
        raise InvalidDicomError("no File Meta transfer syntax or no SOP Class/Instance UID")
    return DicomFile(path, str(ds.SOPClassUID), str(ds.SOPInstanceUID), syntax, path.stat().st_size)


def find_dicom(paths: list[Path], unpack_dir: Path) -> Found:
    """Every DICOM Part-10 file under `paths`; zips are unpacked into `unpack_dir` first."""
    found = Found([], [])
    for path in _walk(paths):
        if zipfile.is_zipfile(path):
            try:
                found.files += find_dicom([_unzip(path, unpack_dir)], unpack_dir).files
            except (ValueError, zipfile.BadZipFile, OSError) as err:
                found.skipped.append((str(path), f"zip not unpacked: {err}"))
            continue
        try:
            found.files.append(_describe(path))
        except (InvalidDicomError, OSError, ValueError, EOFError, KeyError, TypeError) as err:
            found.skipped.append((str(path), f"not DICOM: {str(err)[:80]}"))
    return found
