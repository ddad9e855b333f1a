"""Ray's Prometheus exporters on a host of our choosing instead of every interface.

On a node whose address is not a loopback one, Ray's dashboard agent serves its metrics on
`("", metrics_export_port)` (`ray._private.prometheus_exporter`'s `make_server`), and the dashboard
head and the autoscaler's monitor on `prometheus_client.start_http_server(port=...)`, all without a
token and with no setting for the address. They run in processes Ray starts itself, so the patch
goes in through `sitecustomize` (rayfence/site/, put on those processes' PYTHONPATH by
cluster/ray_env.py) and acts only in those processes. dicomflow's own /metrics (operator role) is
the route to these numbers from outside the node.
"""

from __future__ import annotations

import os
import sys
from typing import Any

HOST_VARIABLE = "DICOMFLOW_RAY_METRICS_HOST"
SITE_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "site")
_RAY_EXPORTING_SCRIPTS = (
    os.path.join("dashboard", "agent.py"),
    os.path.join("dashboard", "dashboard.py"),
    os.path.join("autoscaler", "_private", "monitor.py"),
    os.path.join("autoscaler", "v2", "monitor.py"),
)


def is_ray_exporting_process(argv: list[str]) -> bool:
    """One of the Ray processes that serve Prometheus text: the dashboard agent and head, the monitor."""
    return bool(argv) and argv[0].endswith(_RAY_EXPORTING_SCRIPTS)


def install_from_environment() -> None:
    """sitecustomize's one call: patch when this is a Ray exporting process and a host is asked for."""
    host = os.environ.get(HOST_VARIABLE)
    if host and is_ray_exporting_process(sys.argv):
        install(host)


def install(host: str) -> None:
    import prometheus_client
    import ray._private.prometheus_exporter as exporter

    make_server, start_http_server = exporter.make_server, prometheus_client.start_http_server

    def make_server_on_host(address: str, port: int, app: Any, *args: Any, **kwargs: Any) -> Any:
        return make_server(address or host, port, app, *args, **kwargs)

    def start_http_server_on_host(port: int, addr: str = "0.0.0.0", *args: Any, **kwargs: Any) -> Any:
        return start_http_server(port, host if addr in ("", "0.0.0.0", "::") else addr, *args, **kwargs)

    exporter.make_server = make_server_on_host  # type: ignore[assignment]  # same call, a fixed host
    prometheus_client.start_http_server = start_http_server_on_host  # type: ignore[assignment]


def bind_metrics_to(host: str) -> None:
    """Before Ray starts its processes on this node (they inherit the environment)."""
    os.environ[HOST_VARIABLE] = host
    paths = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p and p != SITE_DIR]
    os.environ["PYTHONPATH"] = os.pathsep.join([SITE_DIR, *paths])
