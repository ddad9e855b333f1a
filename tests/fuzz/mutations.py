"""Hostile variants of real files: what broken firmware, a cut transfer or an attacker sends.
Deterministic for a seed, so a failure can be replayed."""

from __future__ import annotations

import io
import random
import struct
import zlib
from collections.abc import Callable, Iterator

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate
from pydicom.filewriter import dcmwrite
from pydicom.uid import DeflatedExplicitVRLittleEndian, ExplicitVRLittleEndian, generate_uid

Mutation = Callable[[bytes, random.Random], bytes]


def truncate(data: bytes, rng: random.Random) -> bytes:
    return data[: rng.randrange(132, len(data))]


def flip_bytes(data: bytes, rng: random.Random) -> bytes:
    out = bytearray(data)
    for _ in range(rng.randrange(1, 16)):
        position = rng.randrange(132, min(len(out), 4096))  # the header, where parsers trip
        out[position] = rng.randrange(256)
    return bytes(out)


def huge_length(data: bytes, rng: random.Random) -> bytes:
    """A 4-byte length field somewhere in the header set to nearly 4 GiB."""
    out = bytearray(data)
    position = rng.randrange(140, min(len(out) - 4, 4096))
    out[position : position + 4] = struct.pack("<L", 0xFFFFFFF0 - rng.randrange(16))
    return bytes(out)


def splice(data: bytes, rng: random.Random) -> bytes:
    """A block of the file repeated elsewhere (a confused sender)."""
    start = rng.randrange(132, len(data) - 64)
    block = data[start : start + rng.randrange(8, 64)]
    at = rng.randrange(132, len(data))
    return data[:at] + block + data[at:]


MUTATIONS: list[Mutation] = [truncate, flip_bytes, huge_length, splice]


def _part10(ds: Dataset) -> bytes:
    out = io.BytesIO()
    dcmwrite(out, ds, enforce_file_format=True)
    return out.getvalue()


def deep_nesting(template: bytes, levels: int = 300) -> bytes:
    """Undefined-length sequences nested `levels` deep (a few KB that recursed pydicom to death)."""
    meta_end = _dataset_start(template)
    nest = b""
    for _ in range(levels):
        nest = (
            b"\x08\x00\x15\x11SQ\x00\x00\xff\xff\xff\xff"  # (0008,1115) SQ, undefined length
            + b"\xfe\xff\x00\xe0\xff\xff\xff\xff"
            + nest
            + b"\xfe\xff\x0d\xe0\x00\x00\x00\x00"
            + b"\xfe\xff\xdd\xe0\x00\x00\x00\x00"
        )
    return template[:meta_end] + nest + template[meta_end:]


def _dataset_start(data: bytes) -> int:
    position = 132
    while data[position : position + 2] == b"\x02\x00":
        vr = data[position + 4 : position + 6]
        if vr in (b"OB", b"OW", b"UN", b"SQ", b"UT", b"UC", b"UR"):
            position += 12 + struct.unpack("<L", data[position + 8 : position + 12])[0]
        else:
            position += 8 + struct.unpack("<H", data[position + 6 : position + 8])[0]
    return position


def deflate_bomb(template: bytes, inflated: int = 512 * 2**20) -> bytes:
    """A Deflated Explicit VR Little Endian object (well-formed meta) whose dataset inflates to
    `inflated` bytes, nearly all zeros in a private OB element: a few hundred KB on the wire."""
    ds = dcmread(io.BytesIO(template), stop_before_pixels=True)
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    plain = _part10(ds)
    ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    deflated = _part10(ds)
    compressor = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    body = [compressor.compress(plain[_dataset_start(plain) :])]
    body.append(compressor.compress(b"\x09\x00\x10\x10OB\x00\x00" + struct.pack("<L", inflated)))
    zeros = bytes(2**20)
    body += [compressor.compress(zeros) for _ in range(inflated // len(zeros))]
    body.append(compressor.flush())
    return deflated[: _dataset_start(deflated)] + b"".join(body)


def pixel_bomb(template: bytes) -> bytes:
    """A small object that declares 65535 x 65535 frames, 1000 of them, in JPEG 2000."""
    ds = dcmread(io.BytesIO(template))
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.Rows = ds.Columns = 65535
    ds.NumberOfFrames = 1000
    ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.4.90"
    ds.PixelData = encapsulate([b"\xff\x4f\xff\x51" + bytes(60)])
    ds["PixelData"].VR = "OB"
    return _part10(ds)


def cases(files: list[bytes], seed: int, count: int) -> Iterator[tuple[str, bytes]]:
    rng = random.Random(seed)
    for number in range(count):
        mutation = rng.choice(MUTATIONS)
        yield f"{mutation.__name__}#{number}", mutation(rng.choice(files), rng)
