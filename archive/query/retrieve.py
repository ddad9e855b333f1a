"""C-MOVE and C-GET identifiers (PS3.4 C.4.2.2.1, C.4.3.2.1): the unique keys of the level and the
levels above name what to send; the same query builder finds the instances."""

from __future__ import annotations

from typing import Any

from pydicom.dataset import Dataset

from archive.query.attributes import BY_KEYWORD
from archive.query.builder import BadQuery, MatchKey, QuerySpec, build
from archive.query.cfind import LEVELS, UNIQUE_KEY

_UPPER_KEYS = {
    "PATIENT": (),
    "STUDY": ("PatientID",),
    "SERIES": ("PatientID", "StudyInstanceUID"),
    "IMAGE": ("PatientID", "StudyInstanceUID", "SeriesInstanceUID"),
}
MAX_INSTANCES = 65535  # the sub-operation counts are US (PS3.4 C.4.2.1.2)


def _text(identifier: Dataset, keyword: str) -> str:
    value = identifier.get(keyword)
    if value is None:
        return ""
    if isinstance(value, str):
        return value.strip()
    return "\\".join(str(v) for v in value)


def retrieve_keys(identifier: Dataset, model: str) -> list[MatchKey]:
    """The match keys a retrieve names; BadQuery when it names nothing definite."""
    level = str(identifier.get("QueryRetrieveLevel", "") or "").strip().upper()
    if level not in LEVELS or (model == "study" and level == "PATIENT"):
        raise BadQuery(f"QueryRetrieveLevel {level or '(missing)'!r} cannot be retrieved in this model")
    unique = UNIQUE_KEY[level]
    if not _text(identifier, unique) or "*" in _text(identifier, unique) or "?" in _text(identifier, unique):
        raise BadQuery(f"a {level} retrieve needs {unique} (one value or a list, no wildcards)")
    keys = [MatchKey(BY_KEYWORD[unique], _text(identifier, unique))]
    for keyword in _UPPER_KEYS[level]:
        if value := _text(identifier, keyword):
            keys.append(MatchKey(BY_KEYWORD[keyword], value))
    return keys


def instances_query(identifier: Dataset, tenant: str, model: str) -> tuple[str, list[Any]]:
    """A SELECT of the SOP Instance UIDs the identifier names (stable order, MAX_INSTANCES + 1 at most)
    and its parameters. BadQuery when it names nothing definite."""
    query = build(
        QuerySpec("instance", tenant, retrieve_keys(identifier, model), [BY_KEYWORD["SOPInstanceUID"]], limit=MAX_INSTANCES)
    )
    return f"SELECT q.sop_uid FROM ({query.sql}) AS q", query.params
