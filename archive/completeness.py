"""Is a Part-10 file whole? pydicom reads truncated files without complaint, so walk it.

The walk reads only tags and lengths and seeks over values: every element, item and fragment must
fit inside the file, and undefined lengths must be closed by their delimiters. A truncated upload,
a lying length field (the "huge length" attack) or a missing delimiter is found in microseconds per
element, without reading the pixel data.
"""

from __future__ import annotations

import struct
import zlib
from typing import BinaryIO

from pydicom.uid import DeflatedExplicitVRLittleEndian, ExplicitVRBigEndian, ImplicitVRLittleEndian

UNDEFINED = 0xFFFFFFFF
ITEM = (0xFFFE, 0xE000)
ITEM_END = (0xFFFE, 0xE00D)
SEQUENCE_END = (0xFFFE, 0xE0DD)
LONG_VRS = {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"}
_MAX_DEPTH = 32
_INFLATE_STEP = 1 << 20  # bytes inflated at a time: memory stays bounded whatever the ratio


class Incomplete(ValueError):
    """The file ends too early or a length points past its end."""


class _Walker:
    def __init__(self, fp: BinaryIO, end: int, implicit: bool, little: bool) -> None:
        self.fp, self.end, self.implicit = fp, end, implicit
        self.pixel_data_length: int | None = None
        self.e = "<" if little else ">"

    def _read(self, n: int) -> bytes:
        data = self.fp.read(n)
        if len(data) != n:
            raise Incomplete(f"file ends inside an element header at byte {self.fp.tell()}")
        return data

    def _skip(self, length: int, what: str) -> None:
        position = self.fp.tell()
        if position + length > self.end:
            raise Incomplete(f"{what} at byte {position} claims {length} bytes but only {self.end - position} remain")
        self.fp.seek(length, 1)

    def header(self) -> tuple[tuple[int, int], bytes | None, int]:
        group, elem = struct.unpack(self.e + "HH", self._read(4))
        if group == 0xFFFE or self.implicit:
            (length,) = struct.unpack(self.e + "L", self._read(4))
            return (group, elem), None, length
        vr = self._read(2)
        if vr in LONG_VRS:
            self._read(2)
            (length,) = struct.unpack(self.e + "L", self._read(4))
        else:
            (length,) = struct.unpack(self.e + "H", self._read(2))
        return (group, elem), vr, length

    def dataset(self, depth: int, until_item_end: bool) -> None:
        if depth > _MAX_DEPTH:
            raise Incomplete("sequences nested deeper than 32 levels")
        while self.fp.tell() < self.end:
            tag, vr, length = self.header()
            if tag == ITEM_END:
                if until_item_end:
                    return
                raise Incomplete(f"unexpected item delimiter at byte {self.fp.tell() - 8}")
            if length != UNDEFINED:
                if tag == (0x7FE0, 0x0010) and depth == 0:
                    self.pixel_data_length = length
                self._skip(length, f"element ({tag[0]:04X},{tag[1]:04X})")
            elif tag == (0x7FE0, 0x0010) and vr in (b"OB", b"OW", None) and not self.implicit:
                self.items(depth, fragments=True)
            else:
                self.items(depth, fragments=False)
        if until_item_end:
            raise Incomplete("file ends inside a sequence item")

    def items(self, depth: int, fragments: bool) -> None:
        while True:
            if self.fp.tell() >= self.end:
                raise Incomplete("file ends inside a sequence or encapsulated pixel data")
            tag, _, length = self.header()
            if tag == SEQUENCE_END:
                return
            if tag != ITEM:
                raise Incomplete(f"expected an item, found ({tag[0]:04X},{tag[1]:04X}) at byte {self.fp.tell() - 8}")
            if length == UNDEFINED and not fragments:
                self.dataset(depth + 1, until_item_end=True)
            elif length == UNDEFINED:
                raise Incomplete("a pixel data fragment has undefined length")
            else:
                self._skip(length, "item")


def check_complete(fp: BinaryIO, dataset_offset: int, transfer_syntax: str, file_size: int) -> int | None:
    """Raise Incomplete unless every element from `dataset_offset` to the end fits the file.
    Returns the length of a native (defined-length) Pixel Data element, if there is one."""
    if transfer_syntax == DeflatedExplicitVRLittleEndian:
        return None  # the deflate stream is checked when it is inflated for parsing
    fp.seek(dataset_offset)
    walker = _Walker(
        fp,
        file_size,
        implicit=transfer_syntax == ImplicitVRLittleEndian,
        little=transfer_syntax != ExplicitVRBigEndian,
    )
    walker.dataset(0, until_item_end=False)
    return walker.pixel_data_length


def check_inflated_size(fp: BinaryIO, dataset_offset: int, limit: int) -> None:
    """Inflate a Deflated Explicit VR dataset as a stream, keeping nothing, and raise Incomplete if it
    would grow past `limit` (a 300 KB deflate bomb inflates to gigabytes) or is not a deflate stream."""
    fp.seek(dataset_offset)
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    total = 0
    try:
        while chunk := fp.read(65536):
            data = inflater.decompress(chunk, _INFLATE_STEP)
            while True:
                total += len(data)
                if total > limit:
                    raise Incomplete(f"exceeds max_inflated_bytes: the deflated dataset inflates to more than {limit} bytes")
                if not inflater.unconsumed_tail:
                    break
                data = inflater.decompress(inflater.unconsumed_tail, _INFLATE_STEP)
    except zlib.error as err:
        raise Incomplete(f"the deflated dataset is not a valid deflate stream: {err}") from None
