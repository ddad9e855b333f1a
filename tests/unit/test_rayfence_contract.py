"""The contract between rayfence/ and Ray: every internal name the fence patches or relies on still
exists in the pinned Ray, and the fence refuses a Ray it was not written for."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest

import rayfence
from rayfence.haproxy_shim import rewrite
from rayfence.replicas import replica_actor_class


def test_the_installed_ray_is_one_the_fence_was_written_for() -> None:
    rayfence.check_version()
    with pytest.raises(rayfence.UnsupportedRay, match="rayfence"):
        rayfence.check_version("9.9.9")


def test_the_replica_grpc_hook_exists_with_the_arguments_the_fence_passes() -> None:
    from ray.serve._private import replica

    hook = replica.add_port_to_grpc_server
    assert list(inspect.signature(hook).parameters)[:2] == ["server", "address"]


def test_serve_names_replica_actors_as_the_fence_expects() -> None:
    from ray.serve._private.common import DeploymentID

    serve_says = DeploymentID(name="dicomweb", app_name="dicomweb").to_replica_actor_class_name()
    assert replica_actor_class("dicomweb", "dicomweb") == serve_says


def test_rays_haproxy_template_has_the_frontend_the_shim_rewrites() -> None:
    import ray.serve

    templates = [p for p in Path(ray.serve.__file__).parent.rglob("*") if p.is_file() and "haproxy" in p.name.lower()]
    text = "\n".join(p.read_text(errors="replace") for p in templates if p.suffix in (".py", ".j2", ".cfg", ".jinja2", ""))
    assert "frontend http_frontend" in text, f"Ray's HAProxy template no longer names the DICOMweb frontend ({templates})"
    assert "set-header X-Forwarded-For %[src]" in rewrite("frontend http_frontend\n    bind *:8000\n", "127.0.0.1", "-")


def test_rays_exporters_bind_where_the_fence_says(monkeypatch) -> None:
    """Issue 27: Ray's agent serves Prometheus on ("", port), and the dashboard head and the
    autoscaler's monitor through prometheus_client.start_http_server, every interface of a network node. After install() both bind
    the host asked for; the names patched are the ones the pinned Ray calls."""
    import socket

    import prometheus_client
    import ray._private.prometheus_exporter as exporter
    from ray.autoscaler._private import monitor
    from ray.autoscaler.v2 import monitor as monitor_v2
    from ray.dashboard import head
    from ray.dashboard.modules.reporter import reporter_agent

    from rayfence.metrics_binding import install, is_ray_exporting_process

    assert "make_server(address" in inspect.getsource(exporter.PrometheusStatsExporter.serve_http)
    assert 'else ""' in inspect.getsource(reporter_agent)  # a network node's agent asks for every interface
    for module in (head, monitor, monitor_v2):
        assert "prometheus_client.start_http_server(" in inspect.getsource(module), module.__name__
    monkeypatch.setattr(exporter, "make_server", exporter.make_server)  # undone after the test
    monkeypatch.setattr(prometheus_client, "start_http_server", prometheus_client.start_http_server)
    install("127.0.0.1")
    agent = exporter.make_server("", 0, prometheus_client.make_wsgi_app())
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        free = probe.getsockname()[1]
    dashboard, _ = prometheus_client.start_http_server(port=free)
    try:
        assert agent.server_address[0] == "127.0.0.1" and dashboard.server_address[0] == "127.0.0.1"
    finally:
        agent.server_close()
        dashboard.shutdown()
    ray_path = Path(exporter.__file__).parents[1]
    assert is_ray_exporting_process([str(ray_path / "dashboard" / "agent.py"), "--node-ip-address=10.0.0.5"])
    assert is_ray_exporting_process([str(ray_path / "dashboard" / "dashboard.py")])
    assert is_ray_exporting_process([str(ray_path / "autoscaler" / "_private" / "monitor.py"), "--logs-dir=x"])
    assert is_ray_exporting_process([str(ray_path / "autoscaler" / "v2" / "monitor.py")])
    assert not is_ray_exporting_process([str(ray_path / "_private" / "workers" / "default_worker.py")])
