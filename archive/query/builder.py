"""One search over the index, whatever protocol asked: a level, match keys and the attributes to
return become one SQL query. QIDO-RS (`archive.query.qido`) and C-FIND (`archive.query.cfind`)
only translate their requests into a `QuerySpec` and the rows into their answers."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from archive.index.instance_state import served
from archive.query.attributes import BY_KEYWORD, LEVELS, Attribute, UnknownAttribute
from archive.query.matching import BadQueryValue, Condition, condition

_STUDY_PATIENT = (
    "(SELECT DISTINCT ON (tenant, patient_id, issuer) tenant, patient_id, issuer, patient_name,"
    " patient_birth_date, patient_sex FROM study ORDER BY tenant, patient_id, issuer, updated_at DESC) st"
)
_FROM = {
    # a patient is known by its studies; its demographics are those of its newest study
    "patient": _STUDY_PATIENT,
    "study": "study st",
    "series": "series se JOIN study st ON st.tenant = se.tenant AND st.study_uid = se.study_uid",
    "instance": (
        "instance i JOIN series se ON se.tenant = i.tenant AND se.series_uid = i.series_uid"
        " JOIN study st ON st.tenant = i.tenant AND st.study_uid = i.study_uid"
    ),
    "worklist": "worklist_item w",  # Modality Worklist: scheduled procedure steps
    "workitem": "workitem u",  # UPS-RS
}
_ALIAS = {"patient": "st", "study": "st", "series": "se", "instance": "i", "worklist": "w", "workitem": "u"}
_ORDER = {
    "patient": "st.patient_id, st.issuer",
    "study": "st.study_date DESC NULLS LAST, st.study_time DESC NULLS LAST, st.study_uid",
    "series": "se.series_number NULLS LAST, se.series_uid",
    "instance": "i.instance_number NULLS LAST, i.sop_uid",
    "worklist": "w.start_date NULLS LAST, w.start_time NULLS LAST, w.accession_number, w.sps_id",
    "workitem": "u.start_datetime NULLS LAST, u.uid",
}
# counts and modalities come live for a study still arriving, from the aggregates once it is ready
_LIVE = {
    "NumberOfStudyRelatedSeries": "CASE WHEN st.state = 'ready' THEN st.num_series ELSE (SELECT count(*) FROM series c"
    " WHERE c.tenant = st.tenant AND c.study_uid = st.study_uid) END",
    "NumberOfStudyRelatedInstances": "CASE WHEN st.state = 'ready' THEN st.num_instances ELSE (SELECT count(*) FROM"
    " instance c WHERE c.tenant = st.tenant AND c.study_uid = st.study_uid"
    f" AND {served('c')}) END",
    "ModalitiesInStudy": "CASE WHEN st.state = 'ready' THEN st.modalities ELSE ARRAY(SELECT DISTINCT c.modality FROM"
    " series c WHERE c.tenant = st.tenant AND c.study_uid = st.study_uid AND c.modality IS NOT NULL) END",
    "SOPClassesInStudy": "CASE WHEN st.state = 'ready' THEN st.sop_classes ELSE ARRAY(SELECT DISTINCT c.sop_class_uid"
    " FROM instance c WHERE c.tenant = st.tenant AND c.study_uid = st.study_uid) END",
    # counting a 520-instance series' rows at every series query was most of its time
    "NumberOfSeriesRelatedInstances": "CASE WHEN st.state = 'ready' THEN se.num_instances ELSE (SELECT count(*) FROM"
    " instance c WHERE c.tenant = se.tenant AND c.series_uid = se.series_uid"
    f" AND {served('c')}) END",
}


class BadQuery(ValueError):
    """The request cannot be answered as asked; the message says why (HTTP 400, C-FIND A900/C000)."""


@dataclass(frozen=True)
class MatchKey:
    attribute: Attribute
    value: str  # as the protocol carries it: '' or '*' is universal matching


@dataclass
class QuerySpec:
    level: str  # patient | study | series | instance | worklist | workitem
    tenant: str
    keys: list[MatchKey]
    returned: list[Attribute]  # matched keys are returned too
    fuzzy: bool = False
    limit: int | None = None  # None: every match (the caller streams them)
    offset: int = 0


@dataclass
class Query:
    level: str
    sql: str
    params: list[Any]
    returned: list[Attribute]
    limit: int | None
    offset: int
    warnings: list[str] = field(default_factory=list)


def visible(level: str) -> set[str]:
    """The levels whose attributes a query at `level` can match and return (its own and those above)."""
    if level in ("worklist", "workitem"):  # one-level models
        return {level}
    if level not in LEVELS:
        raise BadQuery(f"unknown query level {level!r}; one of {', '.join(LEVELS)}")
    return set(LEVELS[: LEVELS.index(level) + 1])


def _check_level(attribute: Attribute, level: str) -> None:
    if attribute.level not in visible(level):
        raise BadQuery(f"{attribute.keyword} is a {attribute.level}-level attribute; it cannot match {level}s")


def _returned(spec: QuerySpec) -> list[Attribute]:
    wanted = list(spec.returned) + [key.attribute for key in spec.keys]
    if spec.level in ("series", "instance"):  # lower levels also carry the UIDs of the levels above
        wanted.append(BY_KEYWORD["StudyInstanceUID"])
    if spec.level == "instance":
        wanted.append(BY_KEYWORD["SeriesInstanceUID"])
    out: dict[str, Attribute] = {}
    for attribute in wanted:
        _check_level(attribute, spec.level)
        out.setdefault(attribute.tag, attribute)
    return sorted(out.values(), key=lambda a: a.tag)


def _key_condition(spec: QuerySpec, key: MatchKey) -> Condition | None:
    # PatientName on the study table itself (the patient level's `st` is a derived table)
    if key.attribute.column == "st.patient_name" and spec.level in ("study", "series", "instance"):
        first = _name_first(spec, key)
        if first is not None:
            return first
    return condition(key.attribute, key.value, spec.fuzzy)


def _name_first(spec: QuerySpec, key: MatchKey) -> Condition | None:
    """The studies whose name matches, found from the name indexes (migration 12) by row address;
    None where no index answers the match (fuzzy, or a value naming its own component groups).

    Left as a filter, a name next to ORDER BY study date and a LIMIT lets PostgreSQL walk the date
    index and test each study's name, betting on its estimate of how many match: where few do, it
    read every study (QIDO PatientName prefix at 100,000 studies: 154-214 ms against 1-8 ms from
    the indexes, bench/results/2026-12-06). Row addresses taken in the same statement (one
    snapshot) leave it nothing to bet on; a name matching most of the tenant costs a sort of them."""
    own = condition(replace(key.attribute, column="p.patient_name"), key.value, spec.fuzzy)
    if own is None or not own.per_name_group:
        return None
    return Condition(
        f"st.ctid = ANY(ARRAY(SELECT p.ctid FROM study p WHERE p.tenant = %s AND {own.sql}))", [spec.tenant, *own.params]
    )


# a series whose every instance was rejected (or failed) is not answered; a ready study's counts are
# already without them, a study still receiving asks its rows
_SERIES_SERVED = (
    "CASE WHEN st.state = 'ready' THEN se.num_instances > 0 ELSE EXISTS (SELECT 1 FROM instance x"
    f" WHERE x.tenant = se.tenant AND x.series_uid = se.series_uid AND {served('x')}) END"
)


def build(spec: QuerySpec) -> Query:
    """The SQL for `spec`; BadQuery if a key cannot match at its level or its value is malformed."""
    where: list[str] = [f"{_ALIAS[spec.level]}.tenant = %s"]
    args: list[object] = [spec.tenant]
    if spec.level == "instance":
        where.append(served("i"))
    if spec.level == "series":
        where.append(_SERIES_SERVED)
    try:
        for key in spec.keys:
            _check_level(key.attribute, spec.level)
            cond = _key_condition(spec, key)
            if cond is not None:
                where.append(cond.sql)
                args += cond.params
    except (UnknownAttribute, BadQueryValue) as err:
        raise BadQuery(str(err)) from None
    returned = _returned(spec)
    columns = ", ".join(_LIVE.get(a.keyword, a.column) for a in returned)
    sql = f"SELECT {columns} FROM {_FROM[spec.level]} WHERE {' AND '.join(where)} ORDER BY {_ORDER[spec.level]}"
    if spec.limit is not None:  # one more than asked, so the caller knows whether there are more
        sql += " LIMIT %s"
        args.append(spec.limit + 1)
    if spec.offset:
        sql += " OFFSET %s"
        args.append(spec.offset)
    return Query(spec.level, sql, args, returned, spec.limit, spec.offset)
