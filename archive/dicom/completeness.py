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
KNOWN_VRS = frozenset(
    vr.encode()
    for vr in ("AE AS AT CS DA DS DT FD FL IS LO LT OB OD OF OL OV OW PN SH SL SQ SS ST SV TM UC UI UL UN UR US UT UV".split())
)
PIXEL_DATA = 0x7FE00010
_ITEM, _ITEM_END, _SEQUENCE_END = 0xFFFEE000, 0xFFFEE00D, 0xFFFEE0DD


def names_no_vr(vr: bytes) -> bool:
    """pydicom reads an explicit VR header whose VR bytes sort outside "AA".."ZZ" as implicit VR
    (tag + 4-byte length); other unknown VRs get a 2-byte length."""
    return vr not in KNOWN_VRS and not b"AA" <= vr <= b"ZZ"


def looks_implicit(buf: Buffer, pos: int) -> bool:
    """pydicom's test on a dataset's first element: VR bytes that are not two capitals mean implicit VR."""
    return not (0x40 < buf[pos + 4] < 0x5B and 0x40 < buf[pos + 5] < 0x5B)


@dataclass
class Walk:
    """What one walk over a whole dataset found besides its soundness."""

    pixel_data_length: int | None = None  # a native (defined-length) top-level Pixel Data element
    pixel_data_vr: str | None = None  # the top-level Pixel Data's VR as pydicom gives it; None: there is none
    # top-level elements asked for, before the pixels: tag -> (explicit VR or None, value offset, value length)
    elements: dict[int, tuple[bytes | None, int, int]] = field(default_factory=dict)
    # of those, the sequences of undefined length: their value runs through the sequence delimiter
    undefined: set[int] = field(default_factory=set)
    unusual: bool = False  # an element pydicom may read otherwise than this walk: let pydicom parse


# where dcmread(stop_before_pixels=True) stops: what comes after is not indexed
PIXEL_TAGS = frozenset((0x7FE00008, 0x7FE00009, PIXEL_DATA))


class _Walker:
    """Reads each dataset as pydicom's reader does (its VR-encoding test on the first element, its
    rule for bytes that are no VR, whole elements to the end of a defined-length item), so that
    where the two could part, the object is refused or left to pydicom, never indexed from a
    view pydicom does not share."""

    def __init__(self, buf: Buffer, end: int, little: bool, capture: frozenset[int], everything: bool = False) -> None:
        self.buf, self.end, self.capture, self.everything = buf, end, capture, everything
        self.tag_length = struct.Struct("<HHL" if little else ">HHL")
        self.tag_vr_short = struct.Struct("<HH2sH" if little else ">HH2sH")
        self.long = struct.Struct("<L" if little else ">L")
        self.found = Walk()
        self.past_pixels = False

    def header(self, pos: int, implicit: bool) -> tuple[int, bytes | None, int, int]:
        """(tag, VR, length, value offset) of the element at `pos`."""
        if pos + 8 > self.end:
            raise Incomplete(f"file ends inside an element header at byte {pos}")
        group, element, length = self.tag_length.unpack_from(self.buf, pos)
        if group == 0xFFFE or implicit:
            return group << 16 | element, None, length, pos + 8
        _, _, vr, length = self.tag_vr_short.unpack_from(self.buf, pos)
        if vr in LONG_VRS:
            if pos + 12 > self.end:
                raise Incomplete(f"file ends inside an element header at byte {pos}")
            return group << 16 | element, vr, self.long.unpack_from(self.buf, pos + 8)[0], pos + 12
        return self._odd_vr(group << 16 | element, vr, length, pos)

    def _odd_vr(self, tag: int, vr: bytes, length: int, pos: int) -> tuple[int, bytes | None, int, int]:
        if vr in KNOWN_VRS:
            return tag, vr, length, pos + 8
        self.found.unusual = True
        if names_no_vr(vr):
            return tag, None, self.long.unpack_from(self.buf, pos + 4)[0], pos + 8
        return tag, vr, length, pos + 8

    def encoding(self, pos: int, stop: int, implicit: bool, in_item: bool) -> bool:
        """The VR encoding pydicom reads the dataset at `pos` in: the first element decides, except
        that an item of an implicit VR dataset stays implicit."""
        if (in_item and implicit) or pos + 6 > min(stop, self.end):
            return implicit
        if self.tag_length.unpack_from(self.buf, pos)[:2] == (0xFFFE, 0xE00D):
            return implicit  # an empty item: nothing to read either way
        found = looks_implicit(self.buf, pos)
        if found != implicit:
            self.found.unusual = True
        return found

    def dataset(self, pos: int, depth: int, implicit: bool, stop: int, until_item_end: bool) -> int:
        """Walk the elements from `pos`: to the file's end (top level), to an item delimiter
        (undefined-length item) or to `stop` (a defined-length item, whose last element must end
        there: pydicom reads it to its own end and would look for the next item elsewhere)."""
        if depth > _MAX_DEPTH:
            raise Incomplete("sequences nested deeper than 32 levels")
        implicit = self.encoding(pos, stop, implicit, in_item=depth > 0)
        # the element header is read inline for explicit VR: this loop runs for every element of
        # every object received, and a call per element was half of its time
        buf, end, capture, everything = self.buf, self.end, self.capture, self.everything and depth == 0
        tag_vr_short, long = self.tag_vr_short.unpack_from, self.long.unpack_from
        while pos < stop:
            if implicit or pos + 12 > end:
                tag, vr, length, pos = self.header(pos, implicit)
            else:
                group, element, vr, length = tag_vr_short(buf, pos)
                tag = group << 16 | element
                if group == 0xFFFE:
                    vr, length = None, long(buf, pos + 4)[0]
                    pos += 8
                elif vr in LONG_VRS:
                    length = long(buf, pos + 8)[0]
                    pos += 12
                elif vr in KNOWN_VRS:
                    pos += 8
                else:
                    tag, vr, length, pos = self._odd_vr(tag, vr, length, pos)
            if tag >> 16 == 0xFFFE:
                if tag == _ITEM_END and until_item_end and length == 0:
                    return pos
                raise Incomplete(f"({tag >> 16:04X},{tag & 0xFFFF:04X}) with length {length} out of place at byte {pos - 8}")
            if depth == 0 and (everything or tag in capture or tag in PIXEL_TAGS):
                self._note(tag, vr, pos, length)
            if length != UNDEFINED:
                if pos + length > end:
                    raise Incomplete(
                        f"element ({tag >> 16:04X},{tag & 0xFFFF:04X}) at byte {pos} claims {length} "
                        f"bytes but only {end - pos} remain"
                    )
                pos += length
            else:
                start, pos = pos, self.undefined(tag, vr, pos, depth, implicit)
                if everything and not self.past_pixels and tag not in PIXEL_TAGS:
                    self.found.elements[tag] = (vr, start, pos - start)
                    self.found.undefined.add(tag)
        if until_item_end:
            raise Incomplete("file ends inside a sequence item")
        if pos != stop:
            raise Incomplete(f"an element runs {pos - stop} bytes past the end of its sequence item")
        return pos

    def undefined(self, tag: int, vr: bytes | None, pos: int, depth: int, implicit: bool) -> int:
        """An undefined-length element: a sequence's items walked as datasets, or pixel fragments
        (and what pydicom reads as raw bytes up to a delimiter) skipped item by item."""
        if tag == PIXEL_DATA:
            self.found.unusual |= implicit or vr not in (b"OB", b"OW")
            return self.items(pos, depth, implicit, datasets=False)
        datasets = self._read_as_sequence(tag, vr, pos)
        return self.items(pos, depth, implicit, datasets)

    def _read_as_sequence(self, tag: int, vr: bytes | None, pos: int) -> bool:
        """pydicom parses an undefined length as a sequence for SQ, for UN (PS3.5 6.2.2), and in
        implicit VR for a tag the dictionary calls SQ or a private one whose first item follows;
        anything else it reads as bytes up to a delimiter. Only SQ is read alike by both."""
        if vr == b"SQ" or (vr is None and dictionary_has_tag(tag) and dictionary_VR(tag) == "SQ"):
            return True
        self.found.unusual = True
        if vr is None:
            return pos + 8 <= self.end and self.tag_length.unpack_from(self.buf, pos)[:2] == (0xFFFE, 0xE000)
        return vr == b"UN"

    def items(self, pos: int, depth: int, implicit: bool, datasets: bool) -> int:
        while True:
            tag, _, length, pos = self.header(pos, True)  # item headers are tag + length in every encoding
            if tag == _SEQUENCE_END:
                return pos
            if tag != _ITEM:
                raise Incomplete(f"expected an item, found ({tag >> 16:04X},{tag & 0xFFFF:04X}) at byte {pos - 8}")
            if length == UNDEFINED and not datasets:
                raise Incomplete("a pixel data fragment has undefined length")
            if length == UNDEFINED:
                pos = self.dataset(pos, depth + 1, implicit, self.end, until_item_end=True)
            elif pos + length > self.end:
                raise Incomplete(f"item at byte {pos} claims {length} bytes but only {self.end - pos} remain")
            elif datasets:
                pos = self.dataset(pos, depth + 1, implicit, pos + length, until_item_end=False)
            else:
                pos += length

    def _note(self, tag: int, vr: bytes | None, pos: int, length: int) -> None:
        if tag in PIXEL_TAGS:
            if tag == PIXEL_DATA and not self.past_pixels:
                self.found.pixel_data_vr = _pixel_data_vr(vr, length)
                if length != UNDEFINED:
                    self.found.pixel_data_length = length
            self.past_pixels = True
        elif (self.everything or tag in self.capture) and not self.past_pixels and length != UNDEFINED:
            self.found.elements[tag] = (vr, pos, length)


def _pixel_data_vr(vr: bytes | None, length: int) -> str:
    """As written in explicit VR; in implicit VR what pydicom settles 'OB or OW' to (PS3.5 A.1, A.4):
    OB when encapsulated (undefined length), else OW."""
    if vr is not None:
        return vr.decode("ascii", "replace")
    return "OB" if length == UNDEFINED else "OW"


def walk(
    buf: Buffer, dataset_offset: int, transfer_syntax: str, capture: frozenset[int] = frozenset(), everything: bool = False
) -> Walk:
    """Raise Incomplete unless every element from `dataset_offset` to the end of `buf` (the whole
    file, mapped) fits in it; `capture`: top-level tags whose value offsets to note, `everything`:
    all of them before the pixels. A Deflated dataset is walked after inflating it (walk_deflated)."""
    end = len(buf)
    walker = _Walker(buf, end, little=transfer_syntax != ExplicitVRBigEndian, capture=capture, everything=everything)
    try:
        walker.dataset(dataset_offset, 0, transfer_syntax == ImplicitVRLittleEndian, end, until_item_end=False)
    except struct.error as err:  # bounds are checked before every read; this would be a bug here, not a cut file
        raise Incomplete(f"cannot walk the dataset: {err}") from None
    return walker.found


def walk_deflated(fp: BinaryIO, dataset_offset: int, limit: int, spool: BinaryIO) -> Walk:
    """Inflate a Deflated Explicit VR dataset into `spool` (an empty temporary file) and walk it;
    Incomplete if it would grow past `limit` (a 300 KB deflate bomb inflates to gigabytes), is no
    deflate stream or ends before its stream does. pydicom parses what it holds (`unusual`)."""
    size = _inflate(fp, dataset_offset, limit, spool)
    if size == 0:
        return Walk(unusual=True)
    spool.flush()
    with mmap.mmap(spool.fileno(), 0, access=mmap.ACCESS_READ) as inflated:
        found = walk(inflated, 0, DeflatedExplicitVRLittleEndian)
    return Walk(pixel_data_length=found.pixel_data_length, pixel_data_vr=found.pixel_data_vr, unusual=True)


def _inflate(fp: BinaryIO, dataset_offset: int, limit: int, out: BinaryIO) -> int:
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
                out.write(data)
                if not inflater.unconsumed_tail:
                    break
                data = inflater.decompress(inflater.unconsumed_tail, _INFLATE_STEP)
    except zlib.error as err:
        raise Incomplete(f"the deflated dataset is not a valid deflate stream: {err}") from None
    if not inflater.eof:
        raise Incomplete("the deflated dataset ends before its deflate stream does")
    return total
