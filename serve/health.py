"""Is every part of dicomflow answering? Used by `GET /health` and by `dicomflow status`."""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import psycopg
from redis.asyncio import Redis

from archive.blobstore import open_blob_store
from archive.config.settings import Settings
from archive.config.tls import ssl_client_context

Check = dict[str, Any]


async def _timed(name: str, url: str, probe: Callable[[], Awaitable[str]], timeout: float = 5.0) -> Check:
    started = time.monotonic()
    try:
        version = await asyncio.wait_for(probe(), timeout)
        return {"ok": True, "url": url, "version": version, "ms": round((time.monotonic() - started) * 1000, 1)}
    except Exception as err:  # noqa: BLE001 - a health check reports, it does not raise
        return {"ok": False, "url": url, "error": f"{type(err).__name__}: {err}"[:300]}


def _redact(dsn: str) -> str:
    if "@" in dsn and "://" in dsn:
        scheme, rest = dsn.split("://", 1)
        creds, host = rest.rsplit("@", 1)
        return f"{scheme}://{creds.split(':')[0]}@{host}"
    return dsn


async def check_postgres(settings: Settings) -> Check:
    dsn = settings.effective_postgres_dsn()

    async def probe() -> str:
        async with await psycopg.AsyncConnection.connect(dsn, connect_timeout=3) as conn:
            row = await (await conn.execute("SHOW server_version")).fetchone()
            assert row is not None  # SHOW answers one row
            return f"PostgreSQL {row[0]}"

    return await _timed("postgres", _redact(dsn), probe)


async def check_redis(settings: Settings) -> Check:
    url = settings.effective_redis_url()

    async def probe() -> str:
        client = Redis.from_url(url, socket_timeout=3)
        try:
            info = await client.info("server")
            return f"Redis {info['redis_version']}"
        finally:
            await client.aclose()

    return await _timed("redis", _redact(url), probe)


async def check_temporal(settings: Settings) -> Check:
    address = settings.effective_temporal_address()

    async def probe() -> str:
        from temporalio.api.workflowservice.v1 import GetSystemInfoRequest
        from temporalio.client import Client

        client = await Client.connect(address, namespace=settings.temporal.namespace)
        info = await client.workflow_service.get_system_info(GetSystemInfoRequest())
        return f"Temporal server {info.server_version}"

    return await _timed("temporal", address, probe)


RAY_TOKEN_FILE = Path.home() / ".ray" / "auth_token"


def ray_auth_headers() -> dict[str, str]:
    """Ray's dashboard wants the cluster token that `ray.init` wrote (token auth is on by default)."""
    try:
        return {"Authorization": f"Bearer {RAY_TOKEN_FILE.read_text().strip()}"}
    except OSError:
        return {}


async def _http_probe(
    url: str,
    version_of: Callable[[httpx.Response], str],
    headers: dict[str, str] | None = None,
    verify: ssl.SSLContext | bool = True,
) -> str:
    async with httpx.AsyncClient(timeout=4, verify=verify) as client:
        response = await client.get(url, headers=headers)
        response.raise_for_status()
        return version_of(response)


async def check_temporal_ui(settings: Settings) -> Check:
    url = settings.embedded_temporal_ui_url
    return await _timed("temporal_ui", url, lambda: _http_probe(url, lambda r: f"HTTP {r.status_code}"))


async def check_ray_dashboard(settings: Settings) -> Check:
    url = f"http://{settings.bind_host}:{settings.cluster.ray_dashboard_port}"
    return await _timed(
        "ray_dashboard",
        url,
        lambda: _http_probe(url + "/api/version", lambda r: f"Ray {r.json().get('ray_version', '?')}", ray_auth_headers()),
    )


async def check_dicomweb(settings: Settings) -> Check:
    url = f"{settings.dicomweb_origin}/dicomweb"
    health = f"{settings.dicomweb_origin}/health/live"
    # our own certificate may come from our own CA; it is the one client certificates chain to
    verify = ssl_client_context(settings.tls.ca_file) if settings.web.https and settings.tls.ca_file else True
    return await _timed("dicomweb", url, lambda: _http_probe(health, lambda r: r.json().get("version", "?"), verify=verify))


async def check_dimse(settings: Settings) -> Check:
    from serve.capabilities import DIMSE_SERVICES

    url = f"dicom://{settings.dimse.ae_title}@{settings.bind_host}:{settings.dimse.port}"

    def echo() -> str:
        from pynetdicom import AE
        from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]  # generated at import

        ae = AE(ae_title="DICOMFLOW-HC")
        ae.add_requested_context(Verification)
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 3
        assoc = ae.associate(settings.bind_host, settings.dimse.port, ae_title=settings.dimse.ae_title)
        if not assoc.is_established:
            raise ConnectionError("association not accepted")
        try:
            status = assoc.send_c_echo()
            if not status or status.Status != 0:
                raise ConnectionError(f"C-ECHO status {getattr(status, 'Status', None)}")
            services = ", ".join(name for name, _, _ in DIMSE_SERVICES)
            return f"C-ECHO ok ({assoc.acceptor.implementation_version_name or 'SCP'}); serves {services}"
        finally:
            assoc.release()

    return await _timed("dimse", url, lambda: asyncio.to_thread(echo))


async def check_blobs(settings: Settings) -> Check:
    async def probe() -> str:
        store = await asyncio.to_thread(open_blob_store, settings.storage, settings.var_path)
        return store.describe()

    where = settings.storage.s3_endpoint or str(settings.var_path / "blobs")
    return await _timed("blobs", where, probe)


async def full_health(settings: Settings, *, include_dicomweb: bool = True) -> dict[str, Any]:
    checks: dict[str, Awaitable[Check]] = {
        "postgres": check_postgres(settings),
        "redis": check_redis(settings),
        "temporal": check_temporal(settings),
        "temporal_ui": check_temporal_ui(settings),
        "ray_dashboard": check_ray_dashboard(settings),
        "dimse": check_dimse(settings),
        "blobs": check_blobs(settings),
    }
    if include_dicomweb:
        checks["dicomweb"] = check_dicomweb(settings)
    results = dict(zip(checks, await asyncio.gather(*checks.values())))
    return {"status": "ok" if all(c["ok"] for c in results.values()) else "degraded", "services": results}
