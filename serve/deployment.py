"""The Ray Serve deployment that hosts the DICOMweb FastAPI app."""

from __future__ import annotations

from typing import Any, cast

import ray
from ray import serve
from ray.serve import Application, Deployment

from archive.config.sections import WebSettings
from archive.config.settings import Settings
from archive.pixels.decode_pool import shared_pool
from archive.pixels.render import warm_up
from archive.priority import normal_priority
from rayfence.replica_grpc import pin_inter_deployment_grpc
from rayfence.resources import role_resource
from serve.app import build_app


def replica_options(web: WebSettings) -> dict[str, Any]:
    """A fixed replica count, or Ray Serve autoscaling between serve_replicas and serve_max_replicas."""
    if web.serve_max_replicas is None:
        return {"num_replicas": web.serve_replicas}
    return {
        "num_replicas": "auto",
        "autoscaling_config": {
            "min_replicas": web.serve_replicas,
            "initial_replicas": web.serve_replicas,
            "max_replicas": web.serve_max_replicas,
            "target_ongoing_requests": web.serve_target_ongoing_requests,
        },
    }


def dicomweb_application(settings: Settings) -> Application:
    app = build_app(settings)

    @serve.deployment(
        name="dicomweb",
        **replica_options(settings.web),
        max_ongoing_requests=settings.web.serve_max_ongoing_requests,
        # each request is in the audit trail already; Ray's access-log line cost ~0.1 ms of replica CPU a request
        logging_config={"log_level": "WARNING", "enable_access_log": False},
        ray_actor_options={"num_cpus": 0, "resources": {role_resource("web"): 0.001}},  # replicas on web nodes
    )
    @serve.ingress(app)
    class DicomWeb:
        def __init__(self, settings_data: dict[str, Any]) -> None:
            normal_priority()
            pin_inter_deployment_grpc(ray.util.get_node_ip_address())
            self.settings = Settings.model_validate(settings_data)
            warm_up(shared_pool(self.settings.decode.pool_limits))

    deployment = cast(Deployment, DicomWeb)  # mypy does not apply class decorators: @serve.deployment made one
    return deployment.bind(settings.model_dump(mode="json"))
