"""Is a Part-10 file whole? pydicom reads truncated files without complaint, so walk it.

The walk reads only tags and lengths and seeks over values: every element, item and fragment must
fit inside the file, and undefined lengths must be closed by their delimiters. A truncated upload,
a lying length field (the "huge length" attack) or a missing delimiter is found in microseconds per
element, without reading the pixel data.
"""

from __future__ import annotations

import mmap
import struct
import zlib
from dataclasses import dataclass, field
from typing import BinaryIO

from pydicom.datadict import dictionary_has_tag, dictionary_VR
from pydicom.uid import DeflatedExplicitVRLittleEndian, ExplicitVRBigEndian, ImplicitVRLittleEndian

UNDEFINED = 0xFFFFFFFF
LONG_VRS = {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"}
_MAX_DEPTH = 32
_INFLATE_STEP = 1 << 20  # bytes inflated at a time: memory stays bounded whatever the ratio
Buffer = bytes | mmap.mmap  # the whole file


class Incomplete(ValueError):
    """The file ends too early or a length points past its end."""


# PS3.5 6.2; pydicom reads another VR (or bytes that are none) its own way: such a file is parsed by it
KNOWN_VRS = frozenset(vr.encode() for vr in (
    "AE AS AT CS DA DS DT FD FL IS LO LT OB OD OF OL OV OW PN SH SL SQ SS ST SV TM UC UI UL UN UR US UT UV".split()))
PIXEL_DATA = 0x7FE00010
_ITEM, _ITEM_END, _SEQUENCE_END = 0xFFFEE000, 0xFFFEE00D, 0xFFFEE0DD


@dataclass
class Walk:
    """What one walk over a whole dataset found besides its soundness."""

    pixel_data_length: int | None = None  # a native (defined-length) top-level Pixel Data element
    # top-level elements asked for: tag -> (explicit VR or None, value offset, value length)
    elements: dict[int, tuple[bytes | None, int, int]] = field(default_factory=dict)
    unusual: bool = False  # an element pydicom may read otherwise than this walk: let pydicom parse


class _Walker:
    def __init__(self, buf: Buffer, end: int, implicit: bool, little: bool, capture: frozenset[int]) -> None:
        self.buf, self.end, self.implicit, self.capture = buf, end, implicit, capture
        self.tag_length = struct.Struct("<HHL" if little else ">HHL")
        self.tag_vr_short = struct.Struct("<HH2sH" if little else ">HH2sH")
        self.long = struct.Struct("<L" if little else ">L")
        self.found = Walk()

    def header(self, pos: int) -> tuple[int, bytes | None, int, int]:
        """(tag, VR, length, value offset) of the element at `pos`."""
        if pos + 8 > self.end:
            raise Incomplete(f"file ends inside an element header at byte {pos}")
        group, element, length = self.tag_length.unpack_from(self.buf, pos)
        if group == 0xFFFE or self.implicit:
            return group << 16 | element, None, length, pos + 8
        _, _, vr, length = self.tag_vr_short.unpack_from(self.buf, pos)
        if vr in LONG_VRS:
            if pos + 12 > self.end:
                raise Incomplete(f"file ends inside an element header at byte {pos}")
            return group << 16 | element, vr, self.long.unpack_from(self.buf, pos + 8)[0], pos + 12
        if vr not in KNOWN_VRS:
            self.found.unusual = True
        return group << 16 | element, vr, length, pos + 8

    def skip(self, pos: int, length: int, what: str) -> int:
        if pos + length > self.end:
            raise Incomplete(f"{what} at byte {pos} claims {length} bytes but only {self.end - pos} remain")
        return pos + length

    def dataset(self, pos: int, depth: int, until_item_end: bool) -> int:
        if depth > _MAX_DEPTH:
            raise Incomplete("sequences nested deeper than 32 levels")
        # the element header is read inline for explicit VR: this loop runs for every element of
        # every object received, and a call per element was half of its time
        buf, end, implicit, capture, found = self.buf, self.end, self.implicit, self.capture, self.found
        tag_vr_short, long = self.tag_vr_short.unpack_from, self.long.unpack_from
        while pos < end:
            if implicit or pos + 8 > end:
                tag, vr, length, pos = self.header(pos)
            else:
                group, element, vr, length = tag_vr_short(buf, pos)
                tag = group << 16 | element
                if group == 0xFFFE:
                    vr, length = None, long(buf, pos + 4)[0]
                    pos += 8
                elif vr in LONG_VRS:
                    if pos + 12 > end:
                        raise Incomplete(f"file ends inside an element header at byte {pos}")
                    length = long(buf, pos + 8)[0]
                    pos += 12
                else:
                    if vr not in KNOWN_VRS:
                        found.unusual = True
                    pos += 8
            if tag == _ITEM_END:
                if until_item_end:
                    return pos
                raise Incomplete(f"unexpected item delimiter at byte {pos - 8}")
            if length != UNDEFINED:
                if depth == 0 and (tag in capture or tag == PIXEL_DATA):
                    self._note(tag, vr, pos, length)
                if pos + length > end:
                    raise Incomplete(f"element ({tag >> 16:04X},{tag & 0xFFFF:04X}) at byte {pos} claims {length} "
                                     f"bytes but only {end - pos} remain")
                pos += length
            elif tag == PIXEL_DATA and vr in (b"OB", b"OW", None) and not implicit:
                pos = self.items(pos, depth, fragments=True)
            else:
                self._note_undefined(tag, vr)
                pos = self.items(pos, depth, fragments=False)
        if until_item_end:
            raise Incomplete("file ends inside a sequence item")
        return pos

    def items(self, pos: int, depth: int, fragments: bool) -> int:
        while True:
            if pos >= self.end:
                raise Incomplete("file ends inside a sequence or encapsulated pixel data")
            tag, _, length, pos = self.header(pos)
            if tag == _SEQUENCE_END:
                return pos
            if tag != _ITEM:
                raise Incomplete(f"expected an item, found ({tag >> 16:04X},{tag & 0xFFFF:04X}) at byte {pos - 8}")
            if length == UNDEFINED and not fragments:
                pos = self.dataset(pos, depth + 1, until_item_end=True)
            elif length == UNDEFINED:
                raise Incomplete("a pixel data fragment has undefined length")
            else:
                pos = self.skip(pos, length, "item")

    def _note(self, tag: int, vr: bytes | None, pos: int, length: int) -> None:
        if tag == PIXEL_DATA:
            self.found.pixel_data_length = length
        elif tag in self.capture:
            self.found.elements[tag] = (vr, pos, length)

    def _note_undefined(self, tag: int, vr: bytes | None) -> None:
        """pydicom reads an undefined length as a sequence only for SQ, and reads UN's content as
        implicit VR; this walk reads items in the dataset's own encoding."""
        if vr is None:
            self.found.unusual |= dictionary_VR(tag) != "SQ" if dictionary_has_tag(tag) else True
        elif vr != b"SQ":
            self.found.unusual = True


def walk(buf: Buffer, dataset_offset: int, transfer_syntax: str, capture: frozenset[int] = frozenset()) -> Walk:
    """Raise Incomplete unless every element from `dataset_offset` to the end of `buf` (the whole
    file, mapped) fits in it; `capture`: top-level tags whose value offsets to note. A Deflated
    dataset is not walked here (see check_inflated_size)."""
    if transfer_syntax == DeflatedExplicitVRLittleEndian:
        return Walk(unusual=True)
    walker = _Walker(buf, len(buf), implicit=transfer_syntax == ImplicitVRLittleEndian,
                     little=transfer_syntax != ExplicitVRBigEndian, capture=capture)
    try:
        walker.dataset(dataset_offset, 0, until_item_end=False)
    except struct.error as err:  # bounds are checked before every read; this would be a bug here, not a cut file
        raise Incomplete(f"cannot walk the dataset: {err}") from None
    return walker.found


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
