"""Where an instance lives in the blob store.

`{tenant}/{StudyDate or 'nodate'}/{h(StudyUID)}/{h(SeriesUID)}/{h(SOPUID)}.dcm`: every UID is
hashed, so no UID can steer a path, and the study date keeps a day's studies together.
"""

from __future__ import annotations

import hashlib
import re

from archive.tenants import check_tenant

_DATE = re.compile(r"^\d{8}$")


def uid_hash(uid: str) -> str:
    return hashlib.blake2b(uid.encode("ascii", "replace"), digest_size=8).hexdigest()


def series_prefix(tenant: str, study_date: str | None, study_uid: str, series_uid: str) -> str:
    day = study_date if study_date and _DATE.match(study_date) else "nodate"
    return f"{check_tenant(tenant)}/{day}/{uid_hash(study_uid)}/{uid_hash(series_uid)}"


def instance_key(tenant: str, study_date: str | None, study_uid: str, series_uid: str, sop_uid: str) -> str:
    return f"{series_prefix(tenant, study_date, study_uid, series_uid)}/{uid_hash(sop_uid)}.dcm"


def series_metadata_key(tenant: str, study_date: str | None, study_uid: str, series_uid: str) -> str:
    return f"{series_prefix(tenant, study_date, study_uid, series_uid)}/series-metadata.json.gz"
