"""Finding a tenant's objects for a request, or a 404 that says what was not found."""

from __future__ import annotations

from fastapi import HTTPException, Request

from archive.index.reads import StoredObject, find_objects
from archive.uids import is_valid_uid
from serve.state import BadTenant, get_ingest, tenant_of


def check_uids(**uids: str | None) -> None:
    for name, value in uids.items():
        if value is not None and not is_valid_uid(value):
            raise HTTPException(400, f"{name} {value!r} is not a valid UID")


def request_tenant(request: Request, **uids: str | None) -> str:
    """The request's tenant, after checking the UIDs in its path; 400 with the reason otherwise."""
    check_uids(**uids)
    try:
        return tenant_of(request)
    except BadTenant as err:
        raise HTTPException(400, str(err)) from None


async def objects_for(request: Request, study: str, series: str | None = None, instance: str | None = None) -> list[StoredObject]:
    tenant = request_tenant(request, study=study, series=series, instance=instance)
    ingest = await get_ingest(request)
    found = await find_objects(ingest.pool, tenant, study, series, instance)
    if not found:
        what = "instance" if instance else "series" if series else "study"
        raise HTTPException(404, f"no such {what} for this tenant")
    return found
