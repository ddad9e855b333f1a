"""QIDO-RS (PS3.18 10.6) requests as a QuerySpec, and the rows as DICOM JSON."""

from __future__ import annotations

import re
from typing import Any

from archive.query.attributes import BY_KEYWORD, DEFAULT_RETURN, Attribute, UnknownAttribute, resolve
from archive.query.builder import BadQuery, MatchKey, Query, QuerySpec, build, visible

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
MAX_OFFSET = 2**31 - 1  # PostgreSQL takes a bigint; past 2^63 it would be a 500
_CONTROL = {"limit", "offset", "includefield", "fuzzymatching"}
# PS3.18 8.3.4.5/8.3.4.6: optional for the origin server; asked for and not done, the answer says so
_NOT_PERFORMED = {"emptyvaluematching": "Empty Value Matching", "multiplevaluematching": "Multiple Value Matching"}
_TAG = re.compile(r"\(?[0-9A-Fa-f]{4},?[0-9A-Fa-f]{4}\)?")


def _paging(params: dict[str, list[str]]) -> tuple[int, int]:
    try:
        limit = int(params.get("limit", [DEFAULT_LIMIT])[-1])
        offset = int(params.get("offset", [0])[-1])
    except ValueError:
        raise BadQuery("limit and offset must be integers") from None
    if limit < 1 or not 0 <= offset <= MAX_OFFSET:
        raise BadQuery(f"limit must be at least 1 and offset between 0 and {MAX_OFFSET}")
    return limit, offset


def _attribute(name: str) -> Attribute | None:
    """The attribute a key names, or None for one QIDO does not support: PS3.18 8.3.4 has those
    ignored, not refused. A key that tries to be a tag and is not one is malformed: BadQuery."""
    try:
        return resolve(name)
    except UnknownAttribute:
        if _malformed_tag(name):
            raise BadQuery(f"{name!r} is not a tag: a tag is 8 hexadecimal digits, such as 0020000D") from None
        return None


def _malformed_tag(name: str) -> bool:
    """Keywords start with a letter, so a part of a (dotted) key that starts with a digit or '(' is meant as a tag."""
    return any(part[:1].isdigit() or part[:1] == "(" for part in name.strip().split(".") if not _TAG.fullmatch(part))


def _included(level: str, params: dict[str, list[str]], ignored: list[str]) -> list[Attribute]:
    """The default attributes of the level and those named by includefield, if the level can show them."""
    levels = visible(level)
    wanted = [BY_KEYWORD[k] for k in DEFAULT_RETURN[level]]
    names = [name.strip() for value in params.get("includefield", []) for name in value.split(",") if name.strip()]
    if "all" in names:
        wanted += list(BY_KEYWORD.values())
    else:
        for name in names:
            attribute = _attribute(name)
            if attribute is None:
                ignored.append(f"includefield={name}")
            else:
                wanted.append(attribute)
    return [a for a in wanted if a.level in levels]


def _match_keys(params: dict[str, list[str]], scope: dict[str, str], ignored: list[str]) -> list[MatchKey]:
    keys = []
    for name, values in params.items():
        if name in _CONTROL or name in _NOT_PERFORMED:
            continue
        attribute = _attribute(name)
        if attribute is None:
            ignored.append(name)
        else:
            keys.append(MatchKey(attribute, values[-1]))
    return keys + [MatchKey(resolve(name), value) for name, value in scope.items()]


def _options_not_performed(params: dict[str, list[str]]) -> list[str]:
    return [
        f"The {name} parameter is not supported. {what} has not been performed."
        for name, what in _NOT_PERFORMED.items()
        if params.get(name, ["false"])[-1].lower() == "true"
    ]


def build_qido(level: str, tenant: str, params: dict[str, list[str]], scope: dict[str, str] | None = None) -> Query:
    """`params` as parsed from the query string; `scope` holds UIDs from the path. The query's
    warnings are texts for the answer's Warning header."""
    limit, offset = _paging(params)
    warnings = _options_not_performed(params)
    if limit > MAX_LIMIT:
        warnings.append(f"limit {limit} lowered to the maximum {MAX_LIMIT}")
        limit = MAX_LIMIT
    fuzzy = params.get("fuzzymatching", ["false"])[-1].lower() == "true"
    ignored: list[str] = []
    keys = _match_keys(params, scope or {}, ignored)
    returned = _included(level, params, ignored)
    if ignored:
        warnings.append("The following query keys were ignored (not supported): " + ", ".join(ignored))
    query = build(QuerySpec(level, tenant, keys, returned, fuzzy, limit, offset))
    query.warnings = warnings
    return query


def _element(attribute: Attribute, value: Any) -> dict[str, Any]:
    if value is None or value == [] or value == "":
        return {"vr": attribute.vr}
    if attribute.vr == "PN":
        return {"vr": "PN", "Value": [{"Alphabetic": value}]}
    if isinstance(value, list):
        return {"vr": attribute.vr, "Value": sorted(v for v in value if v is not None)}
    if attribute.vr in ("US", "IS", "UL", "SL", "SS"):
        return {"vr": attribute.vr, "Value": [int(value)]}
    if attribute.vr == "CS" and "\\" in str(value):
        return {"vr": "CS", "Value": str(value).split("\\")}
    return {"vr": attribute.vr, "Value": [value]}


def to_json(query: Query, rows: list[tuple[Any, ...]]) -> tuple[list[dict[str, Any]], bool]:
    """DICOM JSON objects for the rows, and whether there were more than `limit`."""
    limit = query.limit if query.limit is not None else len(rows)
    more = len(rows) > limit
    return [{a.tag: _element(a, v) for a, v in zip(query.returned, row)} for row in rows[:limit]], more
