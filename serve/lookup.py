"""Finding a tenant's objects for a request, or a 404 that says what was not found."""

from __future__ import annotations

from fastapi import HTTPException
from psycopg_pool import AsyncConnectionPool

from archive.dicom.uids import is_safe_uid
from archive.index.reads import StoredObject, find_objects


def check_uids(**uids: str | None) -> None:
    for name, value in uids.items():
        if value is not None and not is_safe_uid(value):  # conformant, or kept under uid_policy lenient
            raise HTTPException(400, f"{name} {value!r} is not a valid UID")


async def objects_for(
    pool: AsyncConnectionPool, tenant: str, study: str, series: str | None = None, instance: str | None = None
) -> list[StoredObject]:
    check_uids(study=study, series=series, instance=instance)
    found = await find_objects(pool, tenant, study, series, instance)
    if not found:
        what = "instance" if instance else "series" if series else "study"
        raise HTTPException(404, f"no such {what} for this tenant")
    return found
