"""What a compressed frame says about itself, read from its first bytes without decoding it.

A codec sizes its buffers from the codestream's own header (JPEG 2000 SIZ, JPEG SOF, JPEG-LS
SOF55), not from the DICOM header that receipt's limits checked (archive/pixels/limits.py): a 974-byte
JPEG 2000 frame whose SIZ says 20000 x 20000 inside an object that says 64 x 64 makes openjpeg
reserve gigabytes. So a frame is decoded only when its codestream describes the image Rows,
Columns and Samples per Pixel describe; anything else is refused with a reason, before any codec
sees it. The parse reads only the markers before the frame's first scan or tile.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass

# transfer syntaxes by header family, as pydicom.uid lists them (not imported: the decode pool's
# parent side uses this module and has no other need for pydicom)
J2K_SYNTAXES = frozenset(
    {
        "1.2.840.10008.1.2.4.90",
        "1.2.840.10008.1.2.4.91",
        "1.2.840.10008.1.2.4.92",
        "1.2.840.10008.1.2.4.93",
        "1.2.840.10008.1.2.4.201",
        "1.2.840.10008.1.2.4.202",
        "1.2.840.10008.1.2.4.203",
    }
)
JPEG_SYNTAXES = frozenset(
    {
        "1.2.840.10008.1.2.4.50",
        "1.2.840.10008.1.2.4.51",
        "1.2.840.10008.1.2.4.57",
        "1.2.840.10008.1.2.4.70",
        "1.2.840.10008.1.2.4.80",
        "1.2.840.10008.1.2.4.81",
    }
)
# no more tiles can be numbered (Isot is 16 bits, ISO 15444-1 A.4.2); tiny tiles over a large
# canvas would otherwise cost the codec per-tile bookkeeping however small the image
MAX_J2K_TILES = 65535
JP2_SIGNATURE = b"\x00\x00\x00\x0cjP  \r\n\x87\n"
J2K_SOC, J2K_SIZ = b"\xff\x4f", b"\xff\x51"
JPEG_SOI = b"\xff\xd8"
# SOF0-3, 5-7, 9-11, 13-15 (ITU T.81 B.1.1.3; C4, C8 and CC are other markers) and JPEG-LS SOF55
JPEG_SOF = frozenset({*range(0xC0, 0xC4), *range(0xC5, 0xC8), *range(0xC9, 0xCC), *range(0xCD, 0xD0), 0xF7})
JPEG_STANDALONE = frozenset({0x01, *range(0xD0, 0xD8)})  # TEM, RST0-7: no length follows
JPEG_SOS, JPEG_EOI = 0xDA, 0xD9


class CodestreamMismatch(ValueError):
    """A frame's codestream is missing its header or describes another image than the DICOM header."""


@dataclass(frozen=True)
class Geometry:
    """The image a codestream header describes."""

    columns: int
    rows: int
    samples: int
    source: str  # which header said so, for the reason given to a sender


def frame_geometries(syntax: str, frame: bytes) -> list[Geometry] | None:
    """Every header in `frame` that sizes the decoded image, or None for a transfer syntax without
    such a header (native, RLE: their decoders size from Rows and Columns). Raises
    CodestreamMismatch when the header a syntax requires is not there or is malformed."""
    reader = _READERS.get(_family(syntax))
    return None if reader is None else reader(memoryview(frame))


def check_frame(syntax: str, frame: bytes, rows: int, columns: int, samples: int) -> None:
    """Raise CodestreamMismatch unless every sizing header in `frame` agrees with the DICOM header."""
    for g in frame_geometries(syntax, frame) or []:
        if (g.columns, g.rows, g.samples) != (columns, rows, samples):
            raise CodestreamMismatch(
                f"the {g.source} describes {g.columns} x {g.rows} pixels with {g.samples} sample(s) per pixel, "
                f"but Columns x Rows is {columns} x {rows} with {samples}: refused before decoding"
            )


def _family(syntax: str) -> str:
    if syntax in J2K_SYNTAXES:
        return "j2k"
    if syntax in JPEG_SYNTAXES:
        return "jpeg"  # JPEG-LS (4.80, 4.81) shares JPEG's marker syntax (ITU T.87 annex C)
    return "other"


# JPEG 2000 ---------------------------------------------------------------------------------------


def _j2k(data: memoryview) -> list[Geometry]:
    if bytes(data[:12]) == JP2_SIGNATURE:
        return _jp2(data)
    return [_siz(data, "JPEG 2000 SIZ marker")]


def _siz(data: memoryview, source: str) -> Geometry:
    """ISO 15444-1 A.5.1: SIZ follows SOC directly; the image is Xsiz-XOsiz by Ysiz-YOsiz."""
    if bytes(data[:2]) != J2K_SOC or bytes(data[2:4]) != J2K_SIZ or len(data) < 42:
        raise CodestreamMismatch("the frame does not start with a JPEG 2000 codestream header (SOC, SIZ)")
    xsiz, ysiz, xosiz, yosiz, xtsiz, ytsiz, xtosiz, ytosiz = struct.unpack_from(">8I", data, 8)
    csiz = struct.unpack_from(">H", data, 40)[0]
    if xosiz >= xsiz or yosiz >= ysiz or not xtsiz or not ytsiz or xtosiz > xosiz or ytosiz > yosiz:
        raise CodestreamMismatch(f"the {source} is inconsistent (image, offset and tile sizes)")
    tiles = -(-(xsiz - xtosiz) // xtsiz) * -(-(ysiz - ytosiz) // ytsiz)
    if tiles > MAX_J2K_TILES:
        raise CodestreamMismatch(f"the {source} divides the image into {tiles} tiles (at most {MAX_J2K_TILES})")
    return Geometry(xsiz - xosiz, ysiz - yosiz, csiz, source)


def _jp2(data: memoryview) -> list[Geometry]:
    """ISO 15444-1 annex I: the image header box (in jp2h) and the codestream box must both agree."""
    found: list[Geometry] = []
    for kind, body in _boxes(data):
        if kind == b"jp2h":
            found += [_ihdr(inner) for inner_kind, inner in _boxes(body) if inner_kind == b"ihdr"]
        elif kind == b"jp2c":
            found.append(_siz(body, "JPEG 2000 SIZ marker"))
            break  # what follows the codestream does not size it
    if not any(g.source.endswith("SIZ marker") for g in found):
        raise CodestreamMismatch("the JP2 file has no codestream box")
    return found


def _ihdr(body: memoryview) -> Geometry:
    if len(body) < 10:
        raise CodestreamMismatch("the JP2 image header box is truncated")
    height, width, components = struct.unpack_from(">IIH", body, 0)
    return Geometry(width, height, components, "JP2 image header box")


def _boxes(data: memoryview) -> list[tuple[bytes, memoryview]]:
    """(type, contents) of each box in `data`, up to the first that does not fit."""
    found, at = [], 0
    while at + 8 <= len(data):
        length, kind = struct.unpack_from(">I4s", data, at)
        header = 8
        if length == 1 and at + 16 <= len(data):  # XLBox: a 64-bit length follows
            length, header = struct.unpack_from(">Q", data, at + 8)[0], 16
        elif length == 0:  # to the end of the data
            length = len(data) - at
        if length < header:
            break
        found.append((kind, data[at + header : at + length]))
        at += length
    return found


# JPEG and JPEG-LS --------------------------------------------------------------------------------


def _jpeg(data: memoryview) -> list[Geometry]:
    """ITU T.81 B.2: SOI, then marker segments (each with its length) up to the frame header."""
    if bytes(data[:2]) != JPEG_SOI:
        raise CodestreamMismatch("the frame does not start with a JPEG start-of-image marker")
    at = 2
    while at + 4 <= len(data):
        if data[at] != 0xFF:
            raise CodestreamMismatch(f"the JPEG header is malformed at byte {at}")
        marker = data[at + 1]
        if marker == 0xFF:  # fill byte before a marker
            at += 1
            continue
        if marker in JPEG_STANDALONE:
            at += 2
            continue
        if marker in (JPEG_SOS, JPEG_EOI):
            break
        length = struct.unpack_from(">H", data, at + 2)[0]
        if marker in JPEG_SOF:
            return [_sof(data[at + 4 : at + 2 + length], marker)]
        at += 2 + length
    raise CodestreamMismatch("the JPEG frame has no frame header (SOF) before its scan")


def _sof(body: memoryview, marker: int) -> Geometry:
    """P, Y, X, Nf (T.81 B.2.2; T.87 C.2.2 for SOF55). Y = 0 defers the height to a DNL marker after
    the first scan: it disagrees with Rows as written, and is refused like any other mismatch."""
    if len(body) < 6:
        raise CodestreamMismatch("the JPEG frame header (SOF) is truncated")
    _, height, width, components = struct.unpack_from(">BHHB", body, 0)
    name = "JPEG-LS SOF55 marker" if marker == 0xF7 else f"JPEG SOF{marker - 0xC0} marker"
    return Geometry(width, height, components, name)


_READERS: dict[str, Callable[[memoryview], list[Geometry]]] = {"j2k": _j2k, "jpeg": _jpeg}


# every decode pydicom does in this process -------------------------------------------------------

_GUARD_MARK = "_dicomflow_codestream_guard"


def guard_pydicom_decoding() -> None:
    """Check each frame's codestream before pydicom hands it to any decoding plugin, for every
    decode in this process (pixel_array, iter_array, decompress; each frame of each). Called by
    the decode pool's workers, where all decoding of stored or received pixels runs.

    The one hook pydicom 3.0 offers at that point is DecodeRunner._get_frame_info, which
    DecodeRunner.decode and iter_decode call with each encoded frame before the plugins see it; a
    pydicom without it fails here, at worker start, not silently (tests/unit/test_codestream.py
    holds the contract)."""
    from pydicom.pixels.decoders.base import DecodeRunner

    original = DecodeRunner._get_frame_info  # noqa: SLF001 - the hook named above
    if getattr(original, _GUARD_MARK, False):
        return

    def checked(runner: DecodeRunner, src: bytes) -> None:
        check_frame(str(runner.transfer_syntax), src, runner.rows, runner.columns, runner.samples_per_pixel)
        original(runner, src)

    setattr(checked, _GUARD_MARK, True)
    DecodeRunner._get_frame_info = checked  # type: ignore[method-assign,assignment]  # noqa: SLF001
