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
