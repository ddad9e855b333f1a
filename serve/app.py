"""The DICOMweb application (FastAPI), served by Ray Serve or by any ASGI server in tests."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse

from archive.settings import Settings
from serve.capabilities import router as capabilities_router
from serve.delete import router as delete_router
from serve.health import full_health
from serve.qido import router as qido_router
from serve.stow import router as stow_router
from serve.wado_metadata import router as wado_metadata_router
from serve.wado_pixels import router as wado_pixels_router
from serve.wado_retrieve import router as wado_retrieve_router
from serve.version import dicomflow_version


def build_app(settings: Settings) -> FastAPI:
    app = FastAPI(
        title="dicomflow DICOMweb",
        version=dicomflow_version().split()[-1],
        description="STOW-RS, QIDO-RS, WADO-RS and WADO-URI over a durable, workflow-driven archive.",
    )
    app.state.settings = settings
    if settings.cors_allow_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_allow_origins,
            allow_methods=["GET", "POST", "DELETE", "OPTIONS"],
            allow_headers=["*"],
            expose_headers=["ETag", "Warning", "Content-Location"],
            max_age=3600,
        )
    app.include_router(stow_router)
    app.include_router(qido_router)
    app.include_router(wado_metadata_router)
    app.include_router(wado_pixels_router)
    app.include_router(delete_router)
    app.include_router(capabilities_router)
    app.include_router(wado_retrieve_router)  # last: its /studies/{study} must not shadow the others

    @app.get("/health/live", tags=["health"])
    async def live() -> dict[str, str]:
        """Answers as soon as this replica can take requests."""
        return {"status": "ok", "version": dicomflow_version()}

    @app.get("/health", tags=["health"])
    async def health() -> JSONResponse:
        """Every service dicomflow depends on: reachable, version, URL (same as `dicomflow status`)."""
        report = await full_health(settings, include_dicomweb=False)
        report["services"]["dicomweb"] = {
            "ok": True,
            "url": f"http://{settings.bind_host}:{settings.http_port}/dicomweb",
            "version": dicomflow_version(),
        }
        return JSONResponse(report, status_code=200 if report["status"] == "ok" else 503)

    return app
