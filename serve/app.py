"""The DICOMweb application (FastAPI), served by Ray Serve or by any ASGI server in tests."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.responses import JSONResponse

from archive.settings import Settings
from serve.health import full_health
from serve.qido import router as qido_router
from serve.stow import router as stow_router
from serve.version import dicomflow_version


def build_app(settings: Settings) -> FastAPI:
    app = FastAPI(
        title="dicomflow DICOMweb",
        version=dicomflow_version().split()[-1],
        description="STOW-RS, QIDO-RS, WADO-RS and WADO-URI over a durable, workflow-driven archive.",
    )
    app.state.settings = settings
    app.include_router(stow_router)
    app.include_router(qido_router)

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
