"""Objects leaving the archive (C-GET, C-MOVE): in the stored transfer syntax when the receiver
accepted it, else decompressed to one it did accept, else refused with a reason."""

from __future__ import annotations

from collections.abc import Collection
from pathlib import Path

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import UID, ExplicitVRLittleEndian, ImplicitVRLittleEndian

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


def dataset_to_send(path: Path, stored_syntax: str, accepted: Collection[str]) -> Dataset:
    """The object as a Dataset the association can carry. pynetdicom converts between uncompressed
    syntaxes itself; a compressed object the receiver cannot take is decompressed first."""
    if not sendable(stored_syntax, accepted):
        raise NoCommonSyntax(f"stored as {UID(stored_syntax).name}; the receiver accepted only "
                             + ", ".join(UID(s).name for s in sorted(accepted)))
    ds = dcmread(path)
    if stored_syntax not in accepted and not _uncompressed(stored_syntax):
        # keep the SOP Instance UID: a change of transfer syntax is the same object (PS3.5 10)
        ds.decompress(generate_instance_uid=False)
    return ds
