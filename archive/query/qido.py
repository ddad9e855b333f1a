"""QIDO-RS (PS3.18 10.6) requests as a QuerySpec, and the rows as DICOM JSON."""

from __future__ import annotations

from typing import Any

from archive.query.attributes import BY_KEYWORD, DEFAULT_RETURN, Attribute, UnknownAttribute, resolve
from archive.query.builder import BadQuery, MatchKey, Query, QuerySpec, build, visible

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
MAX_OFFSET = 2**31 - 1  # PostgreSQL takes a bigint; past 2^63 it would be a 500
_CONTROL = {"limit", "offset", "includefield", "fuzzymatching"}


def _paging(params: dict[str, list[str]]) -> tuple[int, int]:
    try:
        limit = int(params.get("limit", [DEFAULT_LIMIT])[-1])
        offset = int(params.get("offset", [0])[-1])
    except ValueError:
        raise BadQuery("limit and offset must be integers") from None
    if limit < 1 or not 0 <= offset <= MAX_OFFSET:
        raise BadQuery(f"limit must be at least 1 and offset between 0 and {MAX_OFFSET}")
    return limit, offset


def _included(level: str, params: dict[str, list[str]]) -> list[Attribute]:
    """The default attributes of the level and those named by includefield, if the level can show them."""
    levels = visible(level)
    wanted = [BY_KEYWORD[k] for k in DEFAULT_RETURN[level]]
    names = [name.strip() for value in params.get("includefield", []) for name in value.split(",") if name.strip()]
    if "all" in names:
        wanted += list(BY_KEYWORD.values())
    else:
        wanted += [resolve(name) for name in names]
    return [a for a in wanted if a.level in levels]


def build_qido(level: str, tenant: str, params: dict[str, list[str]], scope: dict[str, str] | None = None) -> Query:
    """`params` as parsed from the query string; `scope` holds UIDs from the path."""
    limit, offset = _paging(params)
    warnings = []
    if limit > MAX_LIMIT:
        warnings.append(f"299 dicomflow: limit {limit} lowered to the maximum {MAX_LIMIT}")
        limit = MAX_LIMIT
    fuzzy = params.get("fuzzymatching", ["false"])[-1].lower() == "true"
    pairs = [(k, v[-1]) for k, v in params.items() if k not in _CONTROL] + list((scope or {}).items())
    try:
        keys = [MatchKey(resolve(name), value) for name, value in pairs]
        returned = _included(level, params)
    except UnknownAttribute as err:
        raise BadQuery(str(err)) from None
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


def to_json(query: Query, rows: list[tuple]) -> tuple[list[dict[str, Any]], bool]:
    """DICOM JSON objects for the rows, and whether there were more than `limit`."""
    limit = query.limit if query.limit is not None else len(rows)
    more = len(rows) > limit
    return [{a.tag: _element(a, v) for a, v in zip(query.returned, row)} for row in rows[:limit]], more
