"""A QIDO-RS request as one SQL query over the index (no blob is read), and its rows as DICOM JSON."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from archive.qido.attributes import BY_KEYWORD, DEFAULT_RETURN, LEVELS, Attribute, UnknownAttribute, resolve
from archive.qido.matching import BadQueryValue, condition

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
_CONTROL = {"limit", "offset", "includefield", "fuzzymatching"}

_FROM = {
    "study": "study st",
    "series": "series se JOIN study st ON st.tenant = se.tenant AND st.study_uid = se.study_uid",
    "instance": ("instance i JOIN series se ON se.tenant = i.tenant AND se.series_uid = i.series_uid"
                 " JOIN study st ON st.tenant = i.tenant AND st.study_uid = i.study_uid"),
}
_ORDER = {
    "study": "st.study_date DESC NULLS LAST, st.study_time DESC NULLS LAST, st.study_uid",
    "series": "se.series_number NULLS LAST, se.series_uid",
    "instance": "i.instance_number NULLS LAST, i.sop_uid",
}
# counts and modalities come live for a study still arriving, from the aggregates once it is ready
_LIVE = {
    "NumberOfStudyRelatedSeries": "CASE WHEN st.state = 'ready' THEN st.num_series ELSE (SELECT count(*) FROM series c"
                                  " WHERE c.tenant = st.tenant AND c.study_uid = st.study_uid) END",
    "NumberOfStudyRelatedInstances": "CASE WHEN st.state = 'ready' THEN st.num_instances ELSE (SELECT count(*) FROM"
                                     " instance c WHERE c.tenant = st.tenant AND c.study_uid = st.study_uid"
                                     " AND c.state <> 'failed') END",
    "ModalitiesInStudy": "CASE WHEN st.state = 'ready' THEN st.modalities ELSE ARRAY(SELECT DISTINCT c.modality FROM"
                         " series c WHERE c.tenant = st.tenant AND c.study_uid = st.study_uid AND c.modality IS NOT NULL) END",
    "SOPClassesInStudy": "CASE WHEN st.state = 'ready' THEN st.sop_classes ELSE ARRAY(SELECT DISTINCT c.sop_class_uid"
                         " FROM instance c WHERE c.tenant = st.tenant AND c.study_uid = st.study_uid) END",
    "NumberOfSeriesRelatedInstances": "(SELECT count(*) FROM instance c WHERE c.tenant = se.tenant"
                                      " AND c.series_uid = se.series_uid AND c.state <> 'failed')",
}


class BadQuery(ValueError):
    """Answered with 400 and this message."""


@dataclass
class Query:
    level: str
    sql: str
    params: list
    returned: list[Attribute]
    limit: int
    offset: int
    warnings: list[str] = field(default_factory=list)


def _visible(level: str) -> set[str]:
    return set(LEVELS[: LEVELS.index(level) + 1])


def _paging(params: dict[str, list[str]]) -> tuple[int, int]:
    try:
        limit = int(params.get("limit", [DEFAULT_LIMIT])[-1])
        offset = int(params.get("offset", [0])[-1])
    except ValueError:
        raise BadQuery("limit and offset must be integers") from None
    if limit < 1 or offset < 0:
        raise BadQuery("limit must be at least 1 and offset at least 0")
    return limit, offset


def _returned(level: str, params: dict[str, list[str]], matched: list[Attribute]) -> list[Attribute]:
    wanted = [BY_KEYWORD[k] for k in DEFAULT_RETURN[level]]
    includes = [name for value in params.get("includefield", []) for name in value.split(",") if name.strip()]
    if any(name.strip() == "all" for name in includes):
        wanted += [a for a in BY_KEYWORD.values() if a.level in _visible(level)]
    else:
        wanted += [resolve(name) for name in includes]
    wanted += matched
    if level != "study":  # lower levels also carry the UIDs of the levels above
        wanted += [BY_KEYWORD["StudyInstanceUID"]] + ([BY_KEYWORD["SeriesInstanceUID"]] if level == "instance" else [])
    out: dict[str, Attribute] = {}
    for attribute in wanted:
        if attribute.level in _visible(level):
            out.setdefault(attribute.tag, attribute)
    return sorted(out.values(), key=lambda a: a.tag)


def build(level: str, tenant: str, params: dict[str, list[str]], scope: dict[str, str] | None = None) -> Query:
    """`params` as parsed from the query string; `scope` holds UIDs from the path."""
    limit, offset = _paging(params)
    warnings = []
    if limit > MAX_LIMIT:
        warnings.append(f"299 dicomflow: limit {limit} lowered to the maximum {MAX_LIMIT}")
        limit = MAX_LIMIT
    fuzzy = params.get("fuzzymatching", ["false"])[-1].lower() == "true"
    where, args, matched = [f"{_FROM[level].split()[1]}.tenant = %s"], [tenant], []
    if level == "instance":
        where.append("i.state <> 'failed'")
    keys = [(k, v[-1]) for k, v in params.items() if k not in _CONTROL]
    keys += [(k, v) for k, v in (scope or {}).items()]
    try:
        for name, value in keys:
            attribute = resolve(name)
            if attribute.level not in _visible(level):
                raise BadQuery(f"{attribute.keyword} is a {attribute.level}-level attribute; it cannot match {level}s")
            matched.append(attribute)
            cond = condition(attribute, value, fuzzy)
            if cond is not None:
                where.append(cond.sql)
                args += cond.params
        returned = _returned(level, params, matched)
    except (UnknownAttribute, BadQueryValue) as err:
        raise BadQuery(str(err)) from None
    columns = ", ".join(_LIVE.get(a.keyword, a.column) for a in returned)
    sql = (f"SELECT {columns} FROM {_FROM[level]} WHERE {' AND '.join(where)}"
           f" ORDER BY {_ORDER[level]} LIMIT %s OFFSET %s")
    return Query(level, sql, args + [limit + 1, offset], returned, limit, offset, warnings)


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
    more = len(rows) > query.limit
    return [{a.tag: _element(a, v) for a, v in zip(query.returned, row)} for row in rows[: query.limit]], more
