"""C-FIND (PS3.4 C.4.1) identifiers as a QuerySpec, and the rows as response identifiers.

Patient Root and Study Root, levels PATIENT / STUDY / SERIES / IMAGE. Keys of the levels above the
query level match too (relational matching, as Orthanc and dcm4chee allow); a key of a level below
is refused. A key the index does not hold is returned zero-length, as PS3.4 C.2.2.1.3 allows for
optional keys the SCP does not support.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pydicom.charset import convert_encodings, decode_bytes, encode_string
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.tag import Tag

from archive.query.attributes import BY_KEYWORD, BY_TAG, Attribute
from archive.query.builder import BadQuery, MatchKey, Query, QuerySpec, build

LEVELS = {"PATIENT": "patient", "STUDY": "study", "SERIES": "series", "IMAGE": "instance"}
# the unique key of each level, answered even when the identifier left it out
UNIQUE_KEY = {"PATIENT": "PatientID", "STUDY": "StudyInstanceUID", "SERIES": "SeriesInstanceUID", "IMAGE": "SOPInstanceUID"}
UTF8 = "ISO_IR 192"
# answered by the archive itself, not matched against the index
_ARCHIVE_KEYS = {Tag("QueryRetrieveLevel"), Tag("SpecificCharacterSet"), Tag("RetrieveAETitle"),
                 Tag("InstanceAvailability"), Tag("TimezoneOffsetFromUTC")}


@dataclass
class FindRequest:
    query: Query
    level: str  # as the identifier said it: PATIENT, STUDY, ...
    requested: Dataset  # the identifier, to answer every key it asked for
    character_set: list[str]


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


def _set(ds: Dataset, attribute: Attribute, value: Any) -> None:
    if value is None or value == "" or value == []:
        ds.add_new(int(attribute.tag, 16), attribute.vr, None)
    elif isinstance(value, list):
        ds.add_new(int(attribute.tag, 16), attribute.vr, sorted(str(v) for v in value if v is not None))
    elif attribute.vr == "CS" and "\\" in str(value):
        ds.add_new(int(attribute.tag, 16), attribute.vr, str(value).split("\\"))
    else:
        ds.add_new(int(attribute.tag, 16), attribute.vr, str(value))


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


def answer(request: FindRequest, row: Sequence[Any], ae_title: str) -> Dataset:
    """The response identifier for one row: every key the request asked for, in its order."""
    ds = Dataset()
    values = dict(zip((a.tag for a in request.query.returned), row))
    for element in request.requested:
        tag = f"{int(element.tag):08X}"
        if skipped(element):
            continue
        if tag in values:
            _set(ds, BY_TAG[tag], values[tag])
        else:  # not held by the index: returned zero-length
            ds.add_new(element.tag, element.VR, [] if element.VR == "SQ" else None)
    for attribute in request.query.returned:  # the unique keys of the levels above, if not asked for
        if int(attribute.tag, 16) not in ds:
            _set(ds, attribute, values[attribute.tag])
    ds.QueryRetrieveLevel = request.level
    if "RetrieveAETitle" in request.requested:
        ds.RetrieveAETitle = ae_title
    if "InstanceAvailability" in request.requested:
        ds.InstanceAvailability = "ONLINE"
    set_character_set(ds, request.character_set, [str(v) for v in values.values() if isinstance(v, str)])
    return ds
