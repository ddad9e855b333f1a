"""Lossless compression of one stored object, in a decode pool worker (bounded memory and time):
the pixels are encoded with pylibjpeg-openjpeg (JPEG 2000) or pyjpegls (JPEG-LS) through pydicom,
the result decoded again and compared with the original bit for bit, and only a result that
matches is written. The SOP Instance UID stays: a lossless change of transfer syntax is the same
object (PS3.5 10)."""

from __future__ import annotations

import os

import numpy as np
from pydicom import dcmread, dcmwrite
from pydicom.uid import UID


class NotCompressible(ValueError):
    """The object stays as it is: no pixels, already compressed, or a result that did not match."""


def write_compressed(source: str, target: str, transfer_syntax: str) -> int:
    """Write `source` compressed to `target`; its size. NotCompressible when it is left alone."""
    ds = dcmread(source)
    if "PixelData" not in ds:
        raise NotCompressible("no Pixel Data")
    if UID(str(ds.file_meta.TransferSyntaxUID)).is_compressed:
        raise NotCompressible("already compressed")
    original = ds.pixel_array.copy()
    try:
        # from the decoded array, not the raw bytes (pydicom would read a big endian object's bytes
        # as little endian: the check below caught it); and the same object keeps its UID
        ds.compress(transfer_syntax, original, generate_instance_uid=False)
    except (ValueError, RuntimeError, NotImplementedError) as err:  # e.g. a bit depth the codec cannot take
        raise NotCompressible(f"the codec refused it: {err}") from None
    # encapsulated syntaxes are explicit VR little endian, whatever the object was stored in
    dcmwrite(target, ds, implicit_vr=False, little_endian=True, enforce_file_format=True)
    if not np.array_equal(dcmread(target).pixel_array, original):
        raise NotCompressible("decoded again, its pixels differ from the original's: kept as received")
    return os.path.getsize(target)
