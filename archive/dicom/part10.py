"""Give a bare dataset (no preamble, no File Meta) the Part-10 wrapping it should have had."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from pydicom import dcmread
from pydicom.dataset import FileMetaDataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_file_meta_info
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, UID, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from archive.blobstore.base import CHUNK, BlobStore, StagedBlob
from archive.dicom.header import InvalidObject, has_part10_preamble


def _guess_syntax(path: Path) -> UID:
    try:
        ds = dcmread(path, force=True, stop_before_pixels=True, specific_tags=["SOPInstanceUID"])
    except Exception as err:  # noqa: BLE001 - whatever the parser trips on, the answer is the same
        raise InvalidObject(f"not a DICOM object: {err}") from None
    if "SOPInstanceUID" not in ds:
        raise InvalidObject("not a DICOM object: no Part-10 header and no SOP Instance UID")
    return ImplicitVRLittleEndian if ds.original_encoding[0] else ExplicitVRLittleEndian


def add_missing_meta(blobs: BlobStore, staged: StagedBlob) -> StagedBlob:
    if has_part10_preamble(staged.path):
        return staged
    syntax = _guess_syntax(staged.path)
    ds = dcmread(staged.path, force=True, stop_before_pixels=True)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.get("SOPClassUID", "")
    meta.MediaStorageSOPInstanceUID = ds.get("SOPInstanceUID", "")
    meta.TransferSyntaxUID = syntax
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    head = DicomBytesIO()
    head.write(b"\x00" * 128 + b"DICM")
    write_file_meta_info(head, meta, enforce_standard=True)

    def chunks() -> Iterator[bytes]:
        yield head.getvalue()
        with open(staged.path, "rb") as fh:
            while chunk := fh.read(CHUNK):
                yield chunk

    wrapped = blobs.stage_stream(chunks())
    blobs.discard(staged)
    return wrapped
