"""Ray on this machine (or a cluster): the Serve app and the actors."""

from __future__ import annotations

import logging
from pathlib import Path

import ray
from ray import serve

from archive.config.settings import Settings
from cluster.placement import role_resources
from cluster.ray_env import protect_ray_token
from cluster.serve_ingress import ingress

log = logging.getLogger("dicomflow")


def start_ray(settings: Settings) -> None:
    if not settings.cluster.ray_address:
        protect_ray_token()
    if settings.cluster.ray_address:
        ray.init(address=settings.cluster.ray_address, namespace="dicomflow", log_to_driver=False)
    else:
        ray.init(
            address="local",  # a new head, never a cluster some `ray start` on this machine left behind
            namespace="dicomflow",
            include_dashboard=True,
            resources=role_resources(settings.cluster.node_roles),
            dashboard_host=settings.bind_host,
            dashboard_port=settings.cluster.ray_dashboard_port,
            object_store_memory=256 * 1024 * 1024,
            log_to_driver=False,
            configure_logging=True,
            logging_level=logging.WARNING,
        )
    ray_address_file(settings).write_text(ray.get_runtime_context().gcs_address + "\n")


def http_options(settings: Settings) -> dict[str, str | int]:
    """Serve's own proxy terminates TLS itself (serve_ingress = "proxy"); HAProxy's shim does it otherwise."""
    options: dict[str, str | int] = {"host": settings.bind_host, "port": settings.web.http_port}
    if settings.web.https and ingress(settings) == "proxy":
        options.update(ssl_certfile=str(settings.tls.cert_file), ssl_keyfile=str(settings.tls.key_file))
    return options


def ray_address_file(settings: Settings) -> Path:
    """Where `up` notes the cluster's address, for `dicomflow join/scale/status` on this machine."""
    return settings.var_path / "run" / "ray_address"


def connect(settings: Settings) -> None:
    """Join the running cluster as a driver (the CLI's scale, status and leave)."""
    address = settings.cluster.ray_address or ray_address_file(settings).read_text().strip()
    ray.init(address=address, namespace="dicomflow", log_to_driver=False, logging_level=logging.WARNING)


def start_serve(settings: Settings) -> None:
    from cluster.web_scaling import deploy_dicomweb

    serve.start(http_options=http_options(settings), logging_config={"log_level": "WARNING"})
    deploy_dicomweb(settings)


def stop_ray() -> None:
    if not ray.is_initialized():
        return
    try:
        serve.shutdown()
    except Exception:  # noqa: BLE001 - shutting down anyway
        log.exception("serve.shutdown failed")
    ray.shutdown()
