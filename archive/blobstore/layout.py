"""Where an instance lives in the blob store.

`{tenant}/{StudyDate or 'nodate'}/{h(StudyUID)}/{h(SeriesUID)}/{h(SOPUID)}.dcm`: every UID is
hashed, so no UID can steer a path, and the study date keeps a day's studies together.

The receipt adds a fresh write id (`{h(SOPUID)}.{id}.dcm`), so a key is written once and never
again: a replaced object's new bytes cannot land on the acknowledged old ones, a DELETE's late blob
removal cannot hit the same instance stored again, and a key the index dropped stays an orphan.
"""

from __future__ import annotations

import hashlib
import re
import secrets

from archive.identity.tenants import check_tenant

_DATE = re.compile(r"^\d{8}$")


def uid_hash(uid: str) -> str:
    return hashlib.blake2b(uid.encode("ascii", "replace"), digest_size=8).hexdigest()


def series_prefix(tenant: str, study_date: str | None, study_uid: str, series_uid: str) -> str:
    day = study_date if study_date and _DATE.match(study_date) else "nodate"
    return f"{check_tenant(tenant)}/{day}/{uid_hash(study_uid)}/{uid_hash(series_uid)}"


def instance_key(
    tenant: str, study_date: str | None, study_uid: str, series_uid: str, sop_uid: str, write_id: str | None = None
) -> str:
    leaf = uid_hash(sop_uid) + (f".{write_id}" if write_id else "")
    return f"{series_prefix(tenant, study_date, study_uid, series_uid)}/{leaf}.dcm"


def new_write_id() -> str:
    return secrets.token_hex(6)


def series_metadata_key(tenant: str, study_date: str | None, study_uid: str, series_uid: str) -> str:
    return f"{series_prefix(tenant, study_date, study_uid, series_uid)}/series-metadata.json.gz"
