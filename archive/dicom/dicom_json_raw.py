"""DICOM JSON straight from a raw element's bytes, for the common plain cases: the metadata step
converts every header element of every instance, and going through pydicom's DataElement (convert,
store back, to_json_dict) cost ~20 us an element, 8 ms for a 350-element MR header. This gives the
same JSON pydicom gives, and answers None for anything not plainly one of these cases (sequences,
person names with component groups or empty values, binary and ambiguous VRs, UN, big endian,
non-ASCII or ISO 2022 text, a number that is not a plain number, a private tag without an
explicit VR), which pydicom then converts.
tests/unit/test_dicom_json_raw.py holds it equal to pydicom over every real file we have."""

from __future__ import annotations

import math
import re
import struct
from typing import Any

from pydicom.datadict import dictionary_VR
from pydicom.dataelem import RawDataElement
from pydicom.tag import _LUT_DESCRIPTOR_TAGS as PYDICOM_LUT_DESCRIPTOR_TAGS

# how pydicom's converters split and strip each text VR (pydicom.values.converters)
WHOLE_RSTRIP_SPLIT = frozenset({"AS", "CS", "DA", "DT", "TM", "UI"})  # multi_string: rstrip(" \0") then split
PER_VALUE_RSTRIP = frozenset({"SH", "LO", "UC"})  # convert_text: split, then rstrip("\0 ") each
SINGLE_VALUE = frozenset({"LT", "ST", "UT"})  # convert_single_string: rstrip("\0 "), no split
NUMBER_FORMATS = {"US": "H", "SS": "h", "UL": "L", "SL": "l", "UV": "Q", "SV": "q", "FL": "f", "FD": "d"}
PLAIN_INT = re.compile(r"\s*[+-]?\d+\s*")
PLAIN_DECIMAL = re.compile(r"\s*[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?\s*")
# PS3.5 6.2: an IS value is at most 12 characters, a DS value 16; a hostile longer one (64 KB of
# digits, or 1e999) is pydicom's to convert or refuse, element by element, as before
MAX_NUMBER_CHARS = {"IS": 12, "DS": 16}
UNDEFINED_LENGTH = 0xFFFFFFFF
# pydicom reads a LUT Descriptor's first value (the entry count) as unsigned even when it is SS
_LUT_DESCRIPTOR_TAGS = frozenset(PYDICOM_LUT_DESCRIPTOR_TAGS)


def raw_json(raw: RawDataElement) -> dict[str, Any] | None:
    """The element's DICOM JSON, or None when pydicom has to convert it."""
    if not raw.is_little_endian or raw.length == UNDEFINED_LENGTH:
        return None
    vr = raw.VR or _dictionary_vr(raw.tag)
    if vr is None:
        return None
    data = raw.value or b""
    if vr in NUMBER_FORMATS:
        return None if raw.tag in _LUT_DESCRIPTOR_TAGS else _numbers(vr, data)
    if not data.isascii() or b"\x1b" in data:
        return None
    text = data.decode("ascii")
    values = _text_values(vr, text)
    if values is None:
        return None
    if vr == "IS":
        return _parsed(vr, values, PLAIN_INT, int)
    if vr == "DS":
        return _parsed(vr, values, PLAIN_DECIMAL, float)
    if vr == "PN":
        return _person_names(values)
    return _element(vr, values)


def _dictionary_vr(tag: int) -> str | None:
    """Implicit VR: the public dictionary's VR, when it has exactly one."""
    if tag >> 16 & 1:  # private: its VR depends on the creator, pydicom looks that up
        return None
    try:
        vr = dictionary_VR(tag)
    except KeyError:
        return None
    return vr if " " not in vr else None


def _text_values(vr: str, text: str) -> list[str] | None:
    if vr in WHOLE_RSTRIP_SPLIT:
        return text.rstrip(" \x00").split("\\")
    if vr in PER_VALUE_RSTRIP:
        return [value.rstrip("\x00 ") for value in text.split("\\")]
    if vr in SINGLE_VALUE:
        return [text.rstrip("\x00 ")]
    if vr == "UR":
        return [text.rstrip()]
    if vr == "AE":
        return [value.strip() for value in text.split("\\")]
    if vr in ("IS", "DS"):
        return text.strip().rstrip(" \x00").split("\\")
    if vr == "PN":  # pydicom's convert_PN: the whole value stripped, then split
        return text.rstrip("\x00 ").split("\\")
    return None  # AT, SQ, UN and the binary VRs


def _element(vr: str, values: list[Any]) -> dict[str, Any]:
    """One value that is empty is an empty element: no "Value" (PS3.18 F.2.5)."""
    if len(values) == 1 and values[0] in ("", None):
        return {"vr": vr}
    return {"vr": vr, "Value": values}


def _person_names(values: list[str]) -> dict[str, Any] | None:
    """Single-group names (no '=' component groups) in ASCII: the alphabetic group alone."""
    if len(values) == 1 and values[0] == "":
        return {"vr": "PN"}
    if any(value == "" or "=" in value for value in values):
        return None
    return {"vr": "PN", "Value": [{"Alphabetic": value} for value in values]}


def _parsed(vr: str, values: list[str], plain: re.Pattern[str], number: type[int] | type[float]) -> dict[str, Any] | None:
    if len(values) == 1 and values[0] == "":
        return {"vr": vr}
    if not all(len(value) <= MAX_NUMBER_CHARS[vr] and plain.fullmatch(value) for value in values):
        return None
    numbers = [number(value) for value in values]
    if not all(math.isfinite(n) for n in numbers):
        return None
    return {"vr": vr, "Value": numbers}


def _numbers(vr: str, data: bytes) -> dict[str, Any] | None:
    code = NUMBER_FORMATS[vr]
    size = struct.calcsize("<" + code)  # standard sizes: the native L is 8 bytes here
    if len(data) % size:
        return None
    if not data:
        return {"vr": vr}
    return {"vr": vr, "Value": list(struct.unpack(f"<{len(data) // size}{code}", data))}
