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
