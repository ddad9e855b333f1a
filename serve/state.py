"""Per-replica resources, opened on first use (Ray Serve builds the app before any event loop runs)."""

from __future__ import annotations

import asyncio

from fastapi import Request

from archive.settings import Settings
from archive.tenants import BadTenant, check_tenant
from workflows.ingest import Ingest

_lock = asyncio.Lock()


async def get_ingest(request: Request) -> Ingest:
    state = request.app.state
    if getattr(state, "ingest", None) is None:
        async with _lock:
            if getattr(state, "ingest", None) is None:
                state.ingest = await Ingest.open(state.settings)
    return state.ingest


def tenant_of(request: Request) -> str:
    """The `x-tenant` header, else the default tenant. Raises BadTenant for a name that is not allowed."""
    settings: Settings = request.app.state.settings
    return check_tenant(request.headers.get("x-tenant") or settings.default_tenant)


__all__ = ["get_ingest", "tenant_of", "BadTenant"]


def base_url(request: Request) -> str:
    """The server root for URLs we hand out (RetrieveURL, BulkDataURI): `public_base_url` when set,
    else the Host the client used. Some clients (dicomweb-client) send Host without the port, so a
    port-less Host gets the port we listen on."""
    settings: Settings = request.app.state.settings
    if settings.public_base_url:
        return settings.public_base_url.rstrip("/")
    host = request.headers.get("x-forwarded-host") or request.headers.get("host") or request.url.netloc
    scheme = request.headers.get("x-forwarded-proto") or request.url.scheme
    if ":" not in host.rsplit("]", 1)[-1] and not request.headers.get("x-forwarded-host") and settings.http_port != 80:
        host = f"{host}:{settings.http_port}"
    return f"{scheme}://{host}"
