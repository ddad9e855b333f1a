"""Everything a route needs, as FastAPI dependencies: the caller's identity, the tenant it works
in, the archive's resources. Every DICOMweb route goes through `access(role, action)` (declared on
its router), so no route can forget who is asking."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Request
from psycopg_pool import AsyncConnectionPool

from archive.audit import AuditAction
from archive.blobstore import BlobStore
from archive.cache import Cache
from archive.config.settings import Settings
from archive.identity import ANONYMOUS, Principal, Role, TenantRefused
from archive.identity.tenants import BadTenant
from archive.identity.tokens import InvalidToken, TokenVerifier, verifier_for
from archive.resources import Resources
from receiving.ingest import Ingest
from serve.decode_gate import DecodeGate, Waits

AUDIT_SCOPE_KEY = "dicomflow.audit"  # what the audit middleware reads back after the response
_open_lock = asyncio.Lock()


def get_settings(request: Request) -> Settings:
    return request.app.state.settings


async def _opened(request: Request, name: str, opener: Callable[[], Awaitable[Any]]) -> Any:
    """Per-replica resources, opened on first use (Ray Serve builds the app before any loop runs)."""
    state = request.app.state
    if getattr(state, name, None) is None:
        async with _open_lock:
            if getattr(state, name, None) is None:
                setattr(state, name, await opener())
    return getattr(state, name)


async def get_resources(request: Request) -> Resources:
    return await _opened(request, "resources", lambda: Resources.open(get_settings(request)))


async def get_ingest(request: Request) -> Ingest:
    resources = await get_resources(request)
    return await _opened(request, "ingest", lambda: Ingest.open(resources))


async def get_verifier(request: Request) -> TokenVerifier:
    settings = get_settings(request)
    resources = await get_resources(request)

    async def build() -> TokenVerifier:
        verifier = verifier_for(settings, resources.cache.client)
        if verifier is None:
            raise RuntimeError("no token verifier while auth is 'none'")
        return verifier

    return await _opened(request, "verifier", build)


async def get_decode_gate(request: Request) -> DecodeGate:
    """This replica's decode waits (serve/decode_gate.py), kept apart from the default executor."""
    settings = get_settings(request)

    async def build() -> DecodeGate:
        return DecodeGate(settings.decode.threads, settings.decode.tenant_threads, settings.decode.queue_seconds)

    return await _opened(request, "decode_gate", build)


def audit_note(request: Request) -> dict[str, Any]:
    return request.scope.setdefault(AUDIT_SCOPE_KEY, {})


def _unauthorized(reason: str) -> HTTPException:
    error = 'Bearer realm="dicomflow"' + (f', error="invalid_token", error_description="{reason}"' if reason else "")
    return HTTPException(
        401, reason or "a bearer token is required (Authorization: Bearer ...)", headers={"WWW-Authenticate": error}
    )


async def authenticate(request: Request) -> Principal:
    """The caller: from the bearer token when auth is on; anyone, with every right, when it is off."""
    if "principal" in audit_note(request):
        return audit_note(request)["principal"]
    settings = get_settings(request)
    if settings.auth == "none":
        principal = ANONYMOUS
    else:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise _unauthorized("")
        try:
            principal = await (await get_verifier(request)).verify(token.strip())
        except InvalidToken as err:
            raise _unauthorized(str(err).replace('"', "'")) from None
    audit_note(request)["principal"] = principal
    return principal


Caller = Annotated[Principal, Depends(authenticate)]


async def request_tenant(request: Request, caller: Caller) -> str:
    """The tenant: the `/tenants/{tenant}` root or the `x-tenant` header, if the caller may use it;
    else the caller's only tenant (the default tenant while auth is off)."""
    from_path = request.path_params.get("tenant")
    from_header = request.headers.get("x-tenant")
    if from_path and from_header and from_path != from_header:
        raise HTTPException(400, f"the x-tenant header ({from_header!r}) and the URL's tenant ({from_path!r}) differ")
    try:
        tenant = caller.choose_tenant(from_path or from_header, get_settings(request).default_tenant)
    except BadTenant as err:
        raise HTTPException(400, str(err)) from None
    except TenantRefused as err:
        raise HTTPException(400 if err.ambiguous else 403, str(err)) from None
    audit_note(request)["tenant"] = tenant
    return tenant


class access:  # noqa: N801 - reads as a function at the call site: Depends(access(Role.READER, ...))
    """A router-level dependency: the caller must hold `role`; the request is audited as `action`.

    A class, not a closure: Ray Serve pickles the app into each replica, and a closure's string
    annotations would lose the names FastAPI resolves them with."""

    def __init__(self, role: Role, action: AuditAction) -> None:
        self.role = role
        self.action = action

    async def __call__(self, request: Request, caller: Caller) -> Principal:
        audit_note(request)["action"] = self.action
        if not caller.has(self.role):
            raise HTTPException(403, f"this needs the {self.role.value!r} role, which {caller.subject} does not have")
        return caller


async def _pool(resources: Annotated[Resources, Depends(get_resources)]) -> AsyncConnectionPool:
    return resources.pool


async def _blobs(resources: Annotated[Resources, Depends(get_resources)]) -> BlobStore:
    return resources.blobs


async def _cache(resources: Annotated[Resources, Depends(get_resources)]) -> Cache:
    return resources.cache


SettingsDep = Annotated[Settings, Depends(get_settings)]
ResourcesDep = Annotated[Resources, Depends(get_resources)]
IngestDep = Annotated[Ingest, Depends(get_ingest)]
Tenant = Annotated[str, Depends(request_tenant)]
Pool = Annotated[AsyncConnectionPool, Depends(_pool)]
Blobs = Annotated[BlobStore, Depends(_blobs)]
CacheDep = Annotated[Cache, Depends(_cache)]


async def _decode_waits(gate: Annotated[DecodeGate, Depends(get_decode_gate)], tenant: Tenant) -> Waits:
    return Waits(gate, tenant)


# where a request that uses the decode pool waits for it: the decode gate, under its tenant's share
DecodeWaits = Annotated[Waits, Depends(_decode_waits)]


def base_url(request: Request) -> str:
    """The server root for URLs we hand out (RetrieveURL, BulkDataURI): `public_base_url` when set,
    else the Host the client used. Some clients (dicomweb-client) send Host without the port, so a
    port-less Host gets the port we listen on. Under a tenant root, that root."""
    settings = get_settings(request)
    tenant_root = f"/tenants/{request.path_params['tenant']}" if "tenant" in request.path_params else ""
    if settings.web.public_base_url:
        return settings.web.public_base_url.rstrip("/") + tenant_root
    host = request.headers.get("x-forwarded-host") or request.headers.get("host") or request.url.netloc
    scheme = request.headers.get("x-forwarded-proto") or request.url.scheme
    if ":" not in host.rsplit("]", 1)[-1] and not request.headers.get("x-forwarded-host") and settings.web.http_port != 80:
        host = f"{host}:{settings.web.http_port}"
    return f"{scheme}://{host}{tenant_root}"
