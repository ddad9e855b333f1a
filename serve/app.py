"""The DICOMweb application (FastAPI), served by Ray Serve or by any ASGI server in tests."""

from __future__ import annotations

from datetime import UTC, datetime

from fastapi import APIRouter, FastAPI, HTTPException, Request
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute

from archive.config.settings import Settings
from archive.identity import Role
from serve.admin import router as admin_router
from serve.admin_forwarding import changes as admin_forwarding_changes
from serve.admin_forwarding import router as admin_forwarding_router
from serve.admin_rejected import restores as admin_restores
from serve.admin_rejected import router as admin_rejected_router
from serve.audit_middleware import AuditMiddleware
from serve.bulk_update import router as bulk_update_router
from serve.bulk_update import status_router as operations_router
from serve.capabilities import router as capabilities_router
from serve.changefeed import router as changefeed_router
from serve.delete import router as delete_router
from serve.deps import SettingsDep, authenticate
from serve.errors import install_error_handlers
from serve.health import full_health
from serve.metrics import LatencyMiddleware
from serve.metrics import router as metrics_router
from serve.qido import router as qido_router
from serve.shared_result import SharedResult
from serve.stow import router as stow_router
from serve.temporal_ui import router as temporal_ui_router
from serve.ups import router as ups_router
from serve.version import dicomflow_version
from serve.viewer import install_viewer
from serve.wado_metadata import router as wado_metadata_router
from serve.wado_pixels import router as wado_pixels_router
from serve.wado_retrieve import router as wado_retrieve_router

# wado_retrieve last: its /studies/{study} must not shadow the others
DICOMWEB_ROUTERS: list[APIRouter] = [
    bulk_update_router,  # before STOW's POST studies/{study}, which would take $bulkUpdate for a study UID
    operations_router,
    changefeed_router,
    stow_router,
    qido_router,
    wado_metadata_router,
    wado_pixels_router,
    delete_router,
    capabilities_router,
    wado_retrieve_router,
    ups_router,
]
TENANT_ROOT = "/tenants/{tenant}"


def _tenant_route_id(route: APIRoute) -> str:
    return f"tenant_{route.name}"


async def _is_admin(request: Request) -> bool:
    """Health details are for operators; everyone else (no token, a bad one) learns only whether it is up."""
    try:
        return (await authenticate(request)).has(Role.ADMIN)
    except HTTPException:
        return False


def build_app(settings: Settings) -> FastAPI:
    app = FastAPI(
        title="dicomflow DICOMweb",
        version=dicomflow_version().split()[-1],
        description="STOW-RS, QIDO-RS, WADO-RS and WADO-URI over a durable, workflow-driven archive. Every route is "
        "also under /tenants/{tenant}/dicomweb/... for viewers that cannot send an x-tenant header.",
    )
    app.state.settings = settings
    install_error_handlers(app)
    app.add_middleware(AuditMiddleware)
    app.add_middleware(LatencyMiddleware)
    origins = settings.effective_cors_origins
    if origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=origins,
            allow_methods=["GET", "POST", "DELETE", "OPTIONS"],
            allow_headers=["Authorization", "Accept", "Content-Type", "x-tenant", "If-None-Match", "Range"],
            expose_headers=["ETag", "Warning", "Content-Location", "WWW-Authenticate"],
            max_age=3600,
        )
    for router in DICOMWEB_ROUTERS:
        app.include_router(router)
    for router in DICOMWEB_ROUTERS:
        app.include_router(router, prefix=TENANT_ROOT, generate_unique_id_function=_tenant_route_id)
    app.include_router(admin_router)
    app.include_router(admin_forwarding_router)
    app.include_router(admin_forwarding_changes)
    app.include_router(admin_rejected_router)
    app.include_router(admin_restores)
    app.include_router(health_router)
    app.include_router(metrics_router)
    app.include_router(temporal_ui_router)
    install_viewer(app)  # last: its mount takes every path under /viewer
    return app


# module-level handlers (not closures in build_app): Ray Serve pickles the app into its replicas
health_router = APIRouter(tags=["health"])


@health_router.get("/health/live")
async def live() -> dict[str, str]:
    """Answers as soon as this replica can take requests."""
    return {"status": "ok", "version": dicomflow_version()}


HEALTH_FRESH_SECONDS = 2.0  # a load balancer polls every few seconds; `dicomflow status` checks live


async def _health_report(settings: Settings) -> dict:
    report = await full_health(settings, include_dicomweb=False)
    report["services"]["dicomweb"] = {
        "ok": True,
        "url": f"{settings.dicomweb_origin}/dicomweb",
        "version": dicomflow_version(),
    }
    report["checked_at"] = datetime.now(UTC).isoformat(timespec="milliseconds")
    return report


def _shared_health(request: Request, settings: Settings) -> SharedResult[dict]:
    """Per replica, made on first use (the app is pickled into the replicas, a running check is not)."""
    shared: SharedResult[dict] | None = getattr(request.app.state, "health_report", None)
    if shared is None:
        shared = SharedResult(lambda: _health_report(settings), HEALTH_FRESH_SECONDS)
        request.app.state.health_report = shared
    return shared


@health_router.get("/health")
async def health(request: Request, settings: SettingsDep) -> JSONResponse:
    """Every service dicomflow depends on (same as `dicomflow status`); the details need the admin
    role. Callers at the same moment share one check, reused for HEALTH_FRESH_SECONDS."""
    report = await _shared_health(request, settings).get()
    code = 200 if report["status"] == "ok" else 503
    if not await _is_admin(request):
        return JSONResponse({"status": report["status"]}, status_code=code)
    return JSONResponse(report, status_code=code)
