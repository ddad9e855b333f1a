"""C-FIND (PS3.4 C.4.1) identifiers as a QuerySpec, and the rows as response identifiers.

Patient Root and Study Root, levels PATIENT / STUDY / SERIES / IMAGE. Keys of the levels above the
query level match too (relational matching, as Orthanc and dcm4chee allow); a key of a level below
is refused. A key the index does not hold is returned zero-length, as PS3.4 C.2.2.1.3 allows for
optional keys the SCP does not support.

An answer given the transfer syntax it will be written in holds its values already encoded (pydicom
raw elements), which pydicom's writer copies as they are: building ordinary elements and having the
writer convert and check each value again was most of the SCP's time per answer (0.65 ms). The bytes
on the wire are the same either way (tests/unit/test_cfind_answers.py).
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property, lru_cache
from typing import Any

from pydicom.charset import convert_encodings, decode_bytes, default_encoding, encode_string
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.tag import BaseTag, Tag
from pydicom.valuerep import ALLOW_BACKSLASH, CUSTOMIZABLE_CHARSET_VR

from archive.dicom.completeness import LONG_VRS
from archive.query.attributes import BY_KEYWORD, BY_TAG
from archive.query.builder import BadQuery, MatchKey, Query, QuerySpec, build

LEVELS = {"PATIENT": "patient", "STUDY": "study", "SERIES": "series", "IMAGE": "instance"}
# the unique key of each level, answered even when the identifier left it out
UNIQUE_KEY = {"PATIENT": "PatientID", "STUDY": "StudyInstanceUID", "SERIES": "SeriesInstanceUID", "IMAGE": "SOPInstanceUID"}
UTF8 = "ISO_IR 192"
# answered by the archive itself, not matched against the index
_ARCHIVE_KEYS = {
    Tag("QueryRetrieveLevel"),
    Tag("SpecificCharacterSet"),
    Tag("RetrieveAETitle"),
    Tag("InstanceAvailability"),
    Tag("TimezoneOffsetFromUTC"),
}


@dataclass
class FindRequest:
    query: Query
    level: str  # as the identifier said it: PATIENT, STUDY, ...
    requested: Dataset  # the identifier, to answer every key it asked for
    character_set: list[str]

    @cached_property
    def plan(self) -> AnswerPlan:
        return _plan(self)


def _value(element: DataElement) -> str:
    value = element.value
    if value is None:
        return ""
    if isinstance(value, (list, MultiValue)):
        return "\\".join(str(v) for v in value)
    return str(value)


def _level(identifier: Dataset, model: str) -> str:
    level = str(identifier.get("QueryRetrieveLevel", "") or "").strip().upper()
    if level not in LEVELS:
        raise BadQuery(f"QueryRetrieveLevel {level or '(missing)'!r} is not one of {', '.join(LEVELS)}")
    if model == "study" and level == "PATIENT":
        raise BadQuery("the Study Root model has no PATIENT level; use Patient Root")
    return level


def parse_identifier(identifier: Dataset, tenant: str, model: str) -> FindRequest:
    """The query a C-FIND identifier asks for; `model` is 'patient' or 'study' (the root)."""
    level = _level(identifier, model)
    keys = []
    for element in identifier:
        if skipped(element):
            continue
        attribute = BY_TAG.get(f"{int(element.tag):08X}")
        if attribute is None:
            continue
        if element.VR == "SQ":
            raise BadQuery(f"{attribute.keyword} is not a sequence")
        keys.append(MatchKey(attribute, _value(element)))
    charset = asked_character_set(identifier)
    unique = [BY_KEYWORD[UNIQUE_KEY[level]]] + ([BY_KEYWORD["PatientID"]] if model == "patient" else [])
    query = build(QuerySpec(LEVELS[level], tenant, keys, returned=unique))
    return FindRequest(query, level, identifier, charset)


def _encodable(texts: Sequence[str], charset: list[str]) -> bool:
    """Whether every text survives the round trip through `charset` (pydicom replaces what it cannot
    encode, with a warning; a round trip tells without touching the process-wide warning filters,
    which the SCP's other association threads share)."""
    try:
        encodings = convert_encodings(charset)
        return all(decode_bytes(encode_string(text, encodings), encodings, set()) == text for text in texts)
    except Exception:  # noqa: BLE001 - an unknown or unsuitable character set: answer in UTF-8
        return False


def character_set(asked: list[str], texts: Sequence[str]) -> list[str] | None:
    """The asker's own character set when it can carry every answer; else UTF-8; None for plain ASCII."""
    if all(text.isascii() for text in texts):
        return asked or None
    if asked and _encodable(texts, asked):
        return asked
    return [UTF8]


def set_character_set(ds: Dataset, asked: list[str], texts: Sequence[str]) -> None:
    charset = character_set(asked, texts)
    if charset:
        ds.SpecificCharacterSet = charset if len(charset) > 1 else charset[0]


def asked_character_set(identifier: Dataset) -> list[str]:
    charset = identifier.get("SpecificCharacterSet") or []
    return [charset] if isinstance(charset, str) else list(charset)


def skipped(element: DataElement) -> bool:
    """Keys the archive answers itself, private keys and group lengths: not matched against the index."""
    return element.tag in _ARCHIVE_KEYS or element.tag.is_private or element.tag.element == 0


_LEVEL_TAG, _CHARSET_TAG = BaseTag(0x00080052), BaseTag(0x00080005)
_RETRIEVE_AE_TAG, _AVAILABILITY_TAG = BaseTag(0x00080054), BaseTag(0x00080056)
_BINARY = {"US": "<H", "SS": "<h", "UL": "<L", "SL": "<l"}  # the numeric VRs the index returns, little endian
# VRs whose values are written as they are, in pydicom's default character set
_PLAIN = {"AE", "AS", "CS", "DA", "DT", "IS", "TM", "UI", "UR"}


@dataclass(frozen=True)
class AnswerSlot:
    tag: BaseTag
    vr: str
    column: int | None  # the row's value; None: a key the index does not hold, returned zero-length


@dataclass(frozen=True)
class AnswerPlan:
    """What every answer to one request holds, worked out once instead of per row."""

    slots: tuple[AnswerSlot, ...]
    retrieve_ae: bool
    availability: bool
    raw: bool  # no ambiguous VR ('US or SS'): pydicom would have to resolve it while writing


def _plan(request: FindRequest) -> AnswerPlan:
    """Every key the request asked for, then the unique keys of the levels above if it did not."""
    returned = request.query.returned
    column = {int(a.tag, 16): i for i, a in enumerate(returned)}
    slots: dict[int, AnswerSlot] = {}
    for element in request.requested:
        if not skipped(element):
            i = column.get(element.tag)
            slots[element.tag] = AnswerSlot(element.tag, element.VR if i is None else returned[i].vr, i)
    for i, attribute in enumerate(returned):
        slots.setdefault(int(attribute.tag, 16), AnswerSlot(BaseTag(int(attribute.tag, 16)), attribute.vr, i))
    return AnswerPlan(
        tuple(slots.values()),
        "RetrieveAETitle" in request.requested,
        "InstanceAvailability" in request.requested,
        all(len(s.vr) == 2 for s in slots.values()),
    )


def answer(
    request: FindRequest, row: Sequence[Any], ae_title: str, *, implicit_vr: bool | None = None, little_endian: bool = True
) -> Dataset:
    """The response identifier for one row: every key the request asked for.

    `implicit_vr` and `little_endian` are the transfer syntax it will be written in; given them, the
    values come already encoded. Big endian (retired) and ambiguous VRs get ordinary elements."""
    plan = request.plan
    charset = character_set(request.character_set, [v for v in row if isinstance(v, str)])
    if implicit_vr is not None and little_endian and plan.raw:
        try:
            return _raw_answer(plan, row, request.level, ae_title, charset, implicit_vr)
        except (_NotRaw, ValueError, LookupError, struct.error):
            pass  # ordinary elements fail, or cope, the way they always did
    return _element_answer(plan, row, request.level, ae_title, charset)


def _element_answer(plan: AnswerPlan, row: Sequence[Any], level: str, ae_title: str, charset: list[str] | None) -> Dataset:
    ds = Dataset()
    for slot in plan.slots:
        _set(ds, slot, None if slot.column is None else row[slot.column])
    for tag, vr, text in _archive_values(plan, level, ae_title, charset):
        ds.add_new(tag, vr, text)
    return ds


def _set(ds: Dataset, slot: AnswerSlot, value: Any) -> None:
    if value is None or value == "" or value == []:
        ds.add_new(slot.tag, slot.vr, [] if slot.vr == "SQ" else None)
    elif isinstance(value, list):
        ds.add_new(slot.tag, slot.vr, sorted(str(v) for v in value if v is not None))
    elif slot.vr in _BINARY:
        ds.add_new(slot.tag, slot.vr, int(value))
    else:  # pydicom splits a backslash-separated string into its values
        ds.add_new(slot.tag, slot.vr, str(value))


class _NotRaw(Exception):
    """A value this module does not encode itself (a VR the index never returns)."""


@dataclass(frozen=True)
class _Codec:
    """Text encoding for one Specific Character Set, as pydicom's writer would apply it."""

    encodings: list[str]  # Python codecs
    written_as: str | list[str]  # what pydicom calls the dataset's character set (raw values match it)
    ascii_as_is: bool  # ASCII comes out unchanged (no escape sequences), so needs no encoder

    def text(self, value: str) -> bytes:
        if self.ascii_as_is and value.isascii():
            return value.encode()
        return encode_string(value, self.encodings)


_ASCII = "".join(chr(c) for c in range(128) if chr(c) != "\\")


@lru_cache(maxsize=64)
def _codec(charset: tuple[str, ...]) -> _Codec:
    if not charset:
        return _Codec(convert_encodings(default_encoding), default_encoding, True)
    encodings = convert_encodings(list(charset))
    try:
        as_is = encode_string(_ASCII, encodings) == _ASCII.encode()
    except (ValueError, LookupError):
        as_is = False
    return _Codec(encodings, encodings, as_is)


class EncodedAnswer(Dataset):
    """An answer with its bytes for one transfer syntax already made: the SCP sends `encoded` as it
    is (dimse/find_responses); anything else still reads it as a Dataset of raw
    elements. pydicom's writer took ~25% of the SCP's time per answer only to copy those values."""

    def __init__(self, elements: dict[BaseTag, DataElement | RawDataElement], implicit_vr: bool, encoded: bytes) -> None:
        super().__init__(elements)
        self.encoded_implicit_vr = implicit_vr
        self.encoded = encoded


def _element_bytes(tag: BaseTag, vr: str, value: bytes, implicit_vr: bool) -> bytes:
    if implicit_vr:
        return struct.pack("<HHI", tag.group, tag.element, len(value)) + value
    if vr.encode() in LONG_VRS:  # PS3.5 7.1.2: a 4-byte length after two reserved bytes
        return struct.pack("<HH2sHI", tag.group, tag.element, vr.encode(), 0, len(value)) + value
    if len(value) > 0xFFFF:
        raise _NotRaw(f"{len(value)} bytes do not fit a {vr} element")
    return struct.pack("<HH2sH", tag.group, tag.element, vr.encode(), len(value)) + value


def _raw_answer(
    plan: AnswerPlan, row: Sequence[Any], level: str, ae_title: str, charset: list[str] | None, implicit_vr: bool
) -> Dataset:
    codec = _codec(tuple(charset or ()))
    values: dict[BaseTag, tuple[str, bytes]] = {}
    for slot in plan.slots:
        values[slot.tag] = slot.vr, b"" if slot.column is None else _encode(slot.vr, row[slot.column], codec)
    for tag, vr, text in _archive_values(plan, level, ae_title, charset):
        values[tag] = vr, _encode(vr, text, codec)
    ordered = sorted(values.items())
    encoded = b"".join(_element_bytes(tag, vr, value, implicit_vr) for tag, (vr, value) in ordered)
    elements: dict[BaseTag, DataElement | RawDataElement] = {
        tag: RawDataElement(tag, vr, len(value), value, 0, implicit_vr, True) for tag, (vr, value) in ordered
    }
    ds = EncodedAnswer(elements, implicit_vr, encoded)
    # the writer copies raw values only when the dataset says it was encoded as it is being written
    ds.set_original_encoding(implicit_vr, True, codec.written_as)
    return ds


def _archive_values(plan: AnswerPlan, level: str, ae_title: str, charset: list[str] | None) -> list[tuple[BaseTag, str, str]]:
    values = [(_LEVEL_TAG, "CS", level)]
    if plan.retrieve_ae:
        values.append((_RETRIEVE_AE_TAG, "AE", ae_title))
    if plan.availability:
        values.append((_AVAILABILITY_TAG, "CS", "ONLINE"))
    if charset:
        values.append((_CHARSET_TAG, "CS", "\\".join(charset)))
    return values


def _encode(vr: str, value: Any, codec: _Codec) -> bytes:
    """`value` as pydicom writes it for `vr` (little endian), padded to even length."""
    if value is None or value == "" or value == []:
        return b""
    if vr in _BINARY:
        return struct.pack(_BINARY[vr], value)
    if isinstance(value, list):
        items = sorted(str(v) for v in value if v is not None)
    else:
        text = str(value)
        items = [text] if vr in ALLOW_BACKSLASH else text.split("\\")
    encoded = b"\\".join([_encode_one(vr, item, codec) for item in items])
    if len(encoded) % 2:
        encoded += b"\0" if vr == "UI" else b" "
    return encoded


def _encode_one(vr: str, value: str, codec: _Codec) -> bytes:
    if vr == "PN":
        return _person_name(value, codec)
    if vr in CUSTOMIZABLE_CHARSET_VR:
        return codec.text(value)
    if vr not in _PLAIN:
        raise _NotRaw(vr)
    if vr == "IS":  # pydicom keeps an integer string stripped, unless it is only spaces
        value = value.strip() or value
    return value.encode(default_encoding)


def _person_name(name: str, codec: _Codec) -> bytes:
    """Each component group encoded on its own (escape sequences restart at '='), empty trailing groups dropped."""
    if codec.ascii_as_is and name.isascii():
        return name.rstrip("=").encode()
    groups = name.split("=")
    while groups and not groups[-1]:
        groups.pop()
    encoded = [b"^".join([codec.text(part) for part in group.split("^")]) for group in groups]
    while encoded and not encoded[-1]:
        encoded.pop()
    return b"=".join(encoded)
