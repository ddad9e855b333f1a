"""The DICOMweb replicas: deploying the Serve application with its replica bounds, and what runs now.

`dicomflow scale web=N` or `web=MIN..MAX` redeploys the same application with new bounds; Serve
replaces the replicas one at a time, so requests keep being answered while it does.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from ray import serve

from archive.config.settings import Settings
from rayfence import replicas

APP_NAME = "dicomweb"
DEPLOYMENT_NAME = "dicomweb"


def deploy_dicomweb(settings: Settings) -> None:
    from serve.deployment import dicomweb_application

    serve.run(dicomweb_application(settings), name=APP_NAME, route_prefix="/", blocking=False)


def parse_web_bounds(value: str) -> tuple[int, int | None]:
    """`4` is a fixed count; `2..8` lets Serve autoscale between 2 and 8 replicas."""
    low, dots, high = value.partition("..")
    if not low.isdigit() or (dots and not high.isdigit()) or int(low) < 1:
        raise ValueError(f"web={value!r}: write web=N or web=MIN..MAX (at least 1 replica)")
    if dots and int(high) < int(low):
        raise ValueError(f"web={value!r}: MAX is below MIN; write web=N or web=MIN..MAX")
    return int(low), int(high) if dots else None


def with_web_bounds(settings: Settings, low: int, high: int | None) -> Settings:
    return Settings.model_validate({**settings.model_dump(mode="json"), "serve_replicas": low, "serve_max_replicas": high})


def replicas_by_node() -> Counter[str]:
    """Live DICOMweb replica actors per Ray node id."""
    return replicas.replicas_by_node(APP_NAME, DEPLOYMENT_NAME)


def web_report(settings: Settings) -> dict[str, Any]:
    """The deployment's status, its replicas by state and the bounds it was given."""
    app = serve.status().applications.get(APP_NAME)
    deployment = app.deployments.get(DEPLOYMENT_NAME) if app else None
    return {
        "status": str(getattr(deployment.status, "value", deployment.status)) if deployment else "NOT DEPLOYED",
        "replicas": {str(getattr(state, "value", state)): count for state, count in deployment.replica_states.items()}
        if deployment
        else {},
        "min": settings.web.serve_replicas,
        "max": settings.web.serve_max_replicas,
        "target_ongoing_requests": settings.web.serve_target_ongoing_requests if settings.web.serve_max_replicas else None,
    }
