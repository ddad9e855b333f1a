"""The status dataset every DIMSE handler answers with (ErrorComment is LO: 64 characters)."""

from __future__ import annotations

from pydicom.dataset import Dataset

Response = tuple[int | Dataset, Dataset | None]  # (status, identifier) as pynetdicom's generators yield them


def status(code: int, comment: str | None = None) -> Dataset:
    ds = Dataset()
    ds.Status = code
    if comment:
        ds.ErrorComment = comment[:64]
    return ds


def failure(code: int, comment: str) -> Response:
    """A final status with its reason and no identifier."""
    return status(code, comment), None
