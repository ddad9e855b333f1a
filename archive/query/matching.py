"""PS3.4 C.2.2.2 matching, as SQL: single value, wildcards, UID lists, ranges, case-insensitive PN."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from archive.dicom.uids import is_safe_uid
from archive.query.attributes import Attribute


class BadQueryValue(ValueError):
    pass


@dataclass
class Condition:
    sql: str
    params: list[Any] = field(default_factory=list)
    per_name_group: bool = False  # one comparison per PN component group: what the study name indexes answer


_DATE = re.compile(r"^\d{8}$")
_DATETIME = re.compile(r"^\d{4}(\d{2}(\d{2}(\d{2}(\d{2}(\d{2}(\.\d{1,6})?)?)?)?)?)?([+-]\d{4})?$")
_TIME = re.compile(r"^\d{2}(\d{2}(\d{2}(\.\d{1,6})?)?)?$")


def _like(value: str) -> str:
    escaped = value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return escaped.replace("*", "%").replace("?", "_")


def _has_wildcard(value: str) -> bool:
    return "*" in value or "?" in value


def _uid_list(attr: Attribute, value: str) -> Condition:
    uids = [u.strip() for u in re.split(r"[,\\]", value) if u.strip()]
    bad = [u for u in uids if not is_safe_uid(u)]  # a non-conformant UID kept under uid_policy lenient is findable
    if bad:
        raise BadQueryValue(f"{attr.keyword}: {bad[0]!r} is not a valid UID")
    return Condition(f"{attr.column} = ANY(%s)", [uids])


def _text(attr: Attribute, value: str) -> Condition:
    if _has_wildcard(value):
        return Condition(f"{attr.column} LIKE %s", [_like(value)])
    return Condition(f"{attr.column} = %s", [value])


def _person_name(attr: Attribute, value: str, fuzzy: bool) -> Condition:
    """Case-insensitive; a value without '=' may match any component group ("Yamada^Tarou" and
    "山田^太郎" both find "Yamada^Tarou=山田^太郎=やまだ^たろう"), as PS3.4 C.2.2.2.1 lets a PN match."""
    column = f"lower({attr.column})"
    value = value.lower()
    if fuzzy:
        # any name component that starts with the value: "smi" finds "Smith^John" and "Jones^Smilla"
        prefix = _like(value.rstrip("*")) + "%"
        return Condition(f"({column} LIKE %s OR {column} ~ %s)", [prefix, r"[\^= ]" + re.escape(value.rstrip("*"))])
    op = "LIKE" if _has_wildcard(value) else "="
    if op == "LIKE":
        value = _like(value)
    if "=" in value:  # the value names component groups itself: compare the whole name
        return Condition(f"{column} {op} %s", [value])
    return _any_group(attr.column, op, value)


PN_GROUPS = 3  # alphabetic, ideographic, phonetic (PS3.5 6.2.1.1)


def _any_group(column: str, op: str, value: str) -> Condition:
    """One comparison per component group, each the expression of an index (schema migration 12),
    so PostgreSQL answers from a BitmapOr of three index scans instead of reading every study;
    the groups after the first exist only in names that have an '='."""
    arms = []
    for k in range(1, PN_GROUPS + 1):
        arm = f"lower(split_part({column}, '=', {k})) {op} %s"
        arms.append(arm if k == 1 else f"({column} LIKE '%%=%%' AND {arm})")
    return Condition("(" + " OR ".join(arms) + ")", [value] * PN_GROUPS, per_name_group=True)


def _range(attr: Attribute, value: str, pattern: re.Pattern[str], what: str) -> Condition:
    if "-" not in value:
        if not pattern.match(value):
            raise BadQueryValue(f"{attr.keyword}: {value!r} is not a {what}")
        if attr.kind in ("time", "datetime"):  # a shorter value matches any finer one
            return Condition(f"{attr.column} LIKE %s", [value + "%"])
        return Condition(f"{attr.column} = %s", [value])
    low, high = (part.strip() for part in value.split("-", 1))
    for part in (low, high):
        if part and not pattern.match(part):
            raise BadQueryValue(f"{attr.keyword}: {part!r} in range {value!r} is not a {what}")
    if not low and not high:
        raise BadQueryValue(f"{attr.keyword}: the range {value!r} has no bounds")
    clauses, params = [], []
    if attr.kind == "date":  # text comparison only orders well-formed dates ('1994.11.' is not one)
        clauses.append(f"{attr.column} ~ '^[0-9]{{8}}$'")
    if low:
        clauses.append(f"{attr.column} >= %s")
        params.append(low)
    if high:
        clauses.append(f"{attr.column} <= %s")
        params.append(high + ("\uffff" if attr.kind in ("time", "datetime") else ""))  # 1030 includes 103059.9
    return Condition(" AND ".join(clauses), params)


def _integer(attr: Attribute, value: str) -> Condition:
    try:
        return Condition(f"{attr.column} = %s", [int(value)])
    except ValueError:
        raise BadQueryValue(f"{attr.keyword}: {value!r} is not an integer") from None


def _code_list(attr: Attribute, value: str) -> Condition:
    codes = [c.strip() for c in re.split(r"[,\\]", value) if c.strip()]
    if attr.keyword == "ModalitiesInStudy":
        # live, so a study still arriving matches before its aggregates are refreshed
        return Condition(
            "EXISTS (SELECT 1 FROM series ms WHERE ms.tenant = st.tenant AND ms.study_uid = st.study_uid"
            " AND ms.modality = ANY(%s))",
            [codes],
        )
    return Condition(f"{attr.column} && %s", [codes])


def condition(attr: Attribute, value: str, fuzzy: bool = False) -> Condition | None:
    """The SQL for one match key; None for universal matching (an empty value, or '*')."""
    value = value.strip()
    if value in ("", "*"):
        return None
    if attr.kind == "uid":
        return _uid_list(attr, value)
    if attr.kind == "pn":
        return _person_name(attr, value, fuzzy)
    if attr.kind == "date":
        return _range(attr, value, _DATE, "date (YYYYMMDD)")
    if attr.kind == "time":
        return _range(attr, value, _TIME, "time (HHMMSS.FFFFFF)")
    if attr.kind == "datetime":
        return _range(attr, value, _DATETIME, "date-time (YYYYMMDDHHMMSS)")
    if attr.kind == "int":
        return _integer(attr, value)
    if attr.kind == "code_list":
        return _code_list(attr, value)
    return _text(attr, value)
