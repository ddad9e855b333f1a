"""Ray's own listeners (GCS, raylet, workers, dashboard agent, metrics) on loopback when
dicomflow is bound there.

Ray picks its node address before anything else and binds its gRPC servers on every interface
unless that address is a loopback one; `ray.init(_node_ip_address=...)` is resolved back to the
routable address. Ray reads RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER when it is imported: set to 0, a
single-node Ray keeps its node address (and so every listener) on 127.0.0.1. A multi-node cluster
(`ray_address` set) is left alone.
"""

from __future__ import annotations

import os
import secrets
import sys
from pathlib import Path

from archive.config.settings import EMBEDDED_HOST, Settings
from cluster.certs import names_host
from cluster.services.process import ServiceError
from rayfence.metrics_binding import bind_metrics_to


def pin_ray_to_loopback(settings: Settings) -> None:
    if settings.cluster.ray_address or not settings.bind_is_loopback:
        return
    if "ray" in sys.modules:
        raise RuntimeError("pin_ray_to_loopback must run before ray is imported")
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"


# Serve's controller checks every deployment 10 times a second by default: 36.5 ms of CPU a second on
# an idle archive, the largest single part of the idle cost after the dashboard
# (bench/results/2026-12-07-ingest-profile.md). Twice a second is plenty for an archive's
# deployments; an operator's own value wins.
SERVE_CONTROL_LOOP_SECONDS = "0.5"


def bind_ray_metrics(settings: Settings) -> None:
    """Ray's Prometheus exporters listen on every interface of a node with a network address, with
    no token and no setting (rayfence/metrics_binding.py): on loopback here, like the embedded
    servers; operators read the numbers through /metrics."""
    if not settings.bind_is_loopback:
        bind_metrics_to(EMBEDDED_HOST)


def quiet_serve_controller() -> None:
    """Before Ray starts (its processes read it from the environment they inherit)."""
    os.environ.setdefault("RAY_SERVE_CONTROL_LOOP_INTERVAL_S", SERVE_CONTROL_LOOP_SECONDS)


def ray_token_path() -> Path:
    """Where Ray keeps its cluster token (Ray's own default; RAY_AUTH_TOKEN_PATH moves it)."""
    return Path(os.environ.get("RAY_AUTH_TOKEN_PATH") or Path.home() / ".ray" / "auth_token")


def protect_ray_token() -> Path:
    """Ray's token opens the whole cluster (run any code in any actor), yet Ray writes it 0644 in a
    0755 folder. Made here first, 0600 in a 0700 folder, Ray only reads it; one Ray already wrote
    is closed to others. The same 256 random bits Ray would have drawn."""
    path = ray_token_path()
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    path.parent.chmod(0o700)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        path.chmod(0o600)
        return path
    with os.fdopen(fd, "w", encoding="ascii") as out:
        out.write(secrets.token_hex(32))
    return path


def ray_tls_files(settings: Settings) -> tuple[Path, Path, Path] | None:
    """The certificate, key and CA Ray's gRPC uses between its processes and nodes: the archive's own
    (`dicomflow certs`), when the cluster is reachable from the network and they are set."""
    s = settings
    if s.bind_is_loopback or not (s.tls.cert_file and s.tls.key_file and s.tls.ca_file):
        return None
    return Path(s.tls.cert_file).resolve(), Path(s.tls.key_file).resolve(), Path(s.tls.ca_file).resolve()


class RayTlsError(ServiceError):
    """The certificate cannot carry Ray's TLS on this address; the message says what to issue."""


def use_ray_tls(settings: Settings) -> bool:
    """Before Ray starts or connects: its gRPC (GCS, raylets, workers, every node) in mutual TLS, so
    patient data between nodes and the cluster's control plane are off the wire in clear. Every Ray
    process inherits it from the environment; a node joining or a CLI driver sets it the same way."""
    files = ray_tls_files(settings)
    if files is None:
        return False
    cert, key, ca = files
    if not names_host(cert, settings.bind_host):
        raise RayTlsError(
            f"Ray's gRPC is mutual TLS on a network address, and its clients check that {cert} names "
            f"{settings.bind_host}; it does not: issue one that does (`dicomflow certs issue NAME --hosts "
            f"{settings.bind_host} 127.0.0.1`) for tls_cert_file and tls_key_file"
        )
    if "ray" in sys.modules:
        raise RuntimeError("use_ray_tls must run before ray is imported")
    os.environ.update(RAY_USE_TLS="1", RAY_TLS_SERVER_CERT=str(cert), RAY_TLS_SERVER_KEY=str(key), RAY_TLS_CA_CERT=str(ca))
    return True


def join_as_client(settings: Settings) -> None:
    """Before a driver or a new node connects to a running cluster: the cluster `up` started uses
    Ray's token authentication (the token in ~/.ray/auth_token), which a connecting process only
    sends when told to; on loopback its node address must be the loopback one too."""
    if "ray" in sys.modules:
        raise RuntimeError("join_as_client must run before ray is imported")
    os.environ.setdefault("RAY_AUTH_MODE", "token")
    use_ray_tls(settings)
    bind_ray_metrics(settings)
    if settings.bind_is_loopback:
        os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
