"""The instances a DICOMweb path names: a study, optionally one series, optionally one instance."""

from __future__ import annotations


def instance_scope(
    tenant: str, study_uid: str, series_uid: str | None = None, sop_uid: str | None = None, alias: str = ""
) -> tuple[str, list[str]]:
    """A WHERE condition over the instance table (with an optional alias) and its parameters."""
    prefix = f"{alias}." if alias else ""
    where, params = [f"{prefix}tenant = %s", f"{prefix}study_uid = %s"], [tenant, study_uid]
    for column, value in (("series_uid", series_uid), ("sop_uid", sop_uid)):
        if value is not None:
            where.append(f"{prefix}{column} = %s")
            params.append(value)
    return " AND ".join(where), params
