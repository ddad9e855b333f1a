"""`dicomflow join`, `leave`, `scale` and the cluster part of `status`: a cluster admin's commands,
all talking to the controller actor (cluster/controller.py) through Ray's own cluster machinery."""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

from archive.config.settings import Settings, is_loopback
from cluster.certs import serves_tls
from cluster.node_link import LOOPBACK, embedded_ports, links_configured, node_link_service
from cluster.placement import ROLES, role_resources
from cluster.ray_env import ray_tls_files
from cluster.serve_ingress import REPLICA_ENVIRONMENT
from cluster.services.process import ManagedProcess, ephemeral_port, installed_program, port_is_free, read_pid


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    join = sub.add_parser("join", help="add this machine to a running cluster as a Ray worker node; stays in the foreground")
    join.add_argument("address", help="the cluster's Ray address (host:port; `dicomflow status` on the head prints it)")
    join.add_argument("--roles", default="dimse,worker", help=f"comma-separated, from {', '.join(ROLES)} (default dimse,worker)")
    join.add_argument("--node-ip", required=True, help="this node's own address: its SCP listens there")
    join.add_argument("--num-cpus", type=int, default=None)
    leave = sub.add_parser("leave", help="drain this node (no new associations or activities) and stop it")
    leave.add_argument("--node-ip", required=True)
    scale = sub.add_parser("scale", help="change counts live, e.g. `dicomflow scale workers=4 web=2..8`")
    scale.add_argument(
        "counts",
        nargs="+",
        help="workers=N (workflow workers), web=N or web=MIN..MAX (DICOMweb replicas, "
        "autoscaled between the bounds), scp=per-node",
    )


def _join_pidfile(settings: Settings, node_ip: str) -> Path:
    return settings.var_path / "run" / f"join-{node_ip}.pid"


def _controller(settings: Settings) -> Any:
    """The controller's handle; `join_as_client` ran first (cluster/cli.py, before Ray is imported)."""
    from cluster.ray_runtime import connect
    from cluster.workers import find_controller

    connect(settings)
    return find_controller()


def cluster_status(settings: Settings) -> dict[str, Any] | None:
    """The controller's view (nodes, roles, actors per node), or None when no cluster runs here."""
    import ray

    from cluster.ray_runtime import ray_address_file

    if not settings.cluster.ray_address and not ray_address_file(settings).exists():
        return None
    answer: dict[str, Any] = {"error": "no answer from the cluster in 30 s (is `dicomflow up` running?)"}

    def ask() -> None:
        try:
            answer.update(ray.get(_controller(settings).status.remote(), timeout=30))
            answer.pop("error")
        except Exception as err:  # noqa: BLE001 - status reports, it does not fail on a missing cluster
            answer["error"] = f"{type(err).__name__}: {err}"

    asking = threading.Thread(target=ask, daemon=True)  # ray.init has no timeout of its own
    asking.start()
    asking.join(timeout=45)
    if not asking.is_alive():
        ray.shutdown()
    return answer


def print_cluster(report: dict[str, Any]) -> None:
    if "error" in report:
        print(f"  cluster: not reachable ({report['error']})")
        return
    web = report["web"]
    bounds = (
        f"{web['min']}..{web['max']} autoscaled (target {web['target_ongoing_requests']} ongoing requests)"
        if web["max"]
        else f"{web['min']}"
    )
    running = ", ".join(f"{count} {state.lower()}" for state, count in web["replicas"].items()) or "none"
    print(
        f"  cluster: {len(report['nodes'])} node(s), {report['workers_wanted']} workflow worker(s) wanted, "
        f"DICOMweb replicas {bounds}: {running} ({web['status'].lower()})"
    )
    for node in report["nodes"]:
        state = "draining" if node["draining"] else ("REFUSED: " + node["refused"] if node["refused"] else "active")
        replicas = "?" if node["web_replicas"] is None else node["web_replicas"]
        print(
            f"    {node['address']:<15} {'head ' if node['head'] else 'node '} roles={','.join(node['roles']) or '-':<17} "
            f"scp={node['scp_ready']}/{node['scp_actors']} workers={node['workers_ready']}/{node['worker_actors']} (ready/placed) "
            f"web={replicas}  {state}"
        )


def _admission(settings: Settings, roles: list[str], node_ip: str) -> str | None:
    """Refuse before starting anything when the head's blob store or Temporal cannot serve another node."""
    import ray

    try:
        return ray.get(_controller(settings).admission_problem.remote(roles, node_ip), timeout=30)  # type: ignore[no-any-return]
    finally:
        ray.shutdown()


def cmd_join(settings: Settings, args: argparse.Namespace) -> int:
    roles = [r for r in args.roles.split(",") if r]
    resources = role_resources(roles)
    joining = settings.with_values(ray_address=args.address)
    tls = ray_tls_files(settings)
    if tls and not serves_tls(tls[0]):
        print(
            f"dicomflow: will not join: Ray's gRPC is mutual TLS on a network address and every node serves the others, "
            f"but {tls[0]} is a client certificate: issue this node a server one (`dicomflow certs issue NAME --hosts "
            f"{args.node_ip}`) for tls_cert_file/tls_key_file",
            file=sys.stderr,
        )
        return 2
    problem = _admission(joining, roles, args.node_ip)
    if problem:
        print(f"dicomflow: will not join: {problem}", file=sys.stderr)
        return 2
    missing = _missing_secrets(settings)
    if missing:
        print(
            f"dicomflow: will not join: this node reads the embedded services' secrets where it runs, and "
            f"{settings.var_path / 'secrets'} lacks {', '.join(missing)}: copy them from the head's var/secrets "
            "(files 0600, folder 0700), the same var_dir on both",
            file=sys.stderr,
        )
        return 2
    link = _node_link(settings, args.address, args.node_ip)
    argv = [
        installed_program("ray") or "ray",
        "start",
        "--address",
        gcs_address_for_node(args.address),
        "--node-ip-address",
        args.node_ip,
        "--resources",
        json.dumps(resources),
        "--dashboard-agent-listen-port",
        str(ephemeral_port(args.node_ip)),  # the head may hold Ray's default
        "--disable-usage-stats",
        "--block",
        *(["--num-cpus", str(args.num_cpus)] if args.num_cpus is not None else []),
    ]
    pidfile = _join_pidfile(settings, args.node_ip)
    pidfile.parent.mkdir(parents=True, exist_ok=True)
    pidfile.write_text(f"{os.getpid()}\n")
    print(
        f"dicomflow: joining {args.address} as {args.node_ip} with roles {', '.join(roles)}; Ctrl-C or "
        f"`dicomflow leave --node-ip {args.node_ip}` drains and stops this node",
        flush=True,
    )
    # `ray start --block` stops its node on SIGINT; started from a background job (nohup, `&`) SIGINT
    # would be ignored and stay ignored across exec, and the node would outlive `leave`
    signal.signal(signal.SIGINT, signal.default_int_handler)
    node = subprocess.Popen(argv, env=_node_environment())  # noqa: S603 - our own ray binary
    signal.signal(signal.SIGTERM, lambda *_: node.send_signal(signal.SIGINT))  # `ray start --block` stops its node on SIGINT
    try:
        return node.wait()
    except KeyboardInterrupt:
        node.send_signal(signal.SIGINT)
        return node.wait(timeout=60)
    finally:
        pidfile.unlink(missing_ok=True)
        if link is not None:
            link.stop()


def _node_link(settings: Settings, head_address: str, node_ip: str) -> ManagedProcess | None:
    """On a node on another host: the head's embedded PostgreSQL, Redis and Temporal at their usual
    ports on this node's loopback, relayed to the head over mutual TLS with this node's certificate
    (the same settings file as the head's, with tls_cert_file/tls_key_file this node's client pair)."""
    if is_loopback(node_ip) or not embedded_ports(settings) or not links_configured(settings):
        return None
    head = head_address.rsplit(":", 1)[0].strip("[]")
    link = node_link_service(settings, "connect", head)
    link.stop_leftover()
    link.start()
    link.wait_ready(lambda: not port_is_free(LOOPBACK, embedded_ports(settings)[0]), timeout=30)
    print(f"dicomflow: node link to {head} on 127.0.0.1 ports {', '.join(map(str, embedded_ports(settings)))}", flush=True)
    return link


def _missing_secrets(settings: Settings) -> list[str]:
    """The secrets this node's actors will read from var/secrets and cannot find."""
    from archive.config.embedded_secrets import OIDC_CACHE, POSTGRES_APP, REDIS, read_secret

    wanted = []
    if settings.index.dsn is None:
        wanted.append(POSTGRES_APP)
    if settings.cache.url is None:
        wanted.append(REDIS)
    if settings.auth == "oidc" and not settings.oidc.cache_key:
        wanted.append(OIDC_CACHE)
    return [name for name in wanted if not read_secret(settings.var_path, name)]


def gcs_address_for_node(address: str) -> str:
    """`ray start` for a worker node rewrites 127.0.0.1 and localhost to the machine's routable
    address, where a head pinned to loopback does not listen; the IPv4-mapped IPv6 form names the
    same socket and is left alone (a second node on this machine, as the tests run it)."""
    host, _, port = address.rpartition(":")
    return f"[::ffff:127.0.0.1]:{port}" if host in ("127.0.0.1", "localhost") else address


def _node_environment() -> dict[str, str]:
    """`ray start` for a worker node: the cluster's token, and Ray's multi-node switch on (the
    loopback pin that keeps a one-machine head and its drivers on 127.0.0.1 would refuse a worker
    node; this node's address is given explicitly instead). Replicas placed here run as the head's do."""
    return {
        **os.environ,
        **REPLICA_ENVIRONMENT,
        "RAY_AUTH_MODE": os.environ.get("RAY_AUTH_MODE", "token"),
        "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "1",
    }


def cmd_leave(settings: Settings, args: argparse.Namespace) -> int:
    import ray

    try:
        drained = ray.get(_controller(settings).drain.remote(args.node_ip), timeout=180)
    finally:
        ray.shutdown()
    if not drained:
        print(
            f"dicomflow: no worker node at {args.node_ip} in the cluster (the head leaves with `dicomflow down`)", file=sys.stderr
        )
        return 1
    pid = read_pid(_join_pidfile(settings, args.node_ip))
    if pid:
        os.kill(pid, signal.SIGTERM)
    print(
        f"dicomflow: {args.node_ip} drained: its actors finished their work and moved; "
        + ("its node is stopping" if pid else "stop its `dicomflow join` (Ctrl-C) on that machine")
    )
    return 0


def parse_counts(counts: list[str]) -> dict[str, Any]:
    """workers=N, web=N or web=MIN..MAX, scp=per-node (the only placement SCPs have)."""
    from cluster.web_scaling import parse_web_bounds

    parsed: dict[str, Any] = {}
    for item in counts:
        key, _, value = item.partition("=")
        if key == "workers" and value.isdigit():
            parsed["workers"] = int(value)
        elif key == "web":
            parsed["web"] = parse_web_bounds(value)
        elif key == "scp" and value == "per-node":
            continue
        else:
            raise ValueError(
                f"{item!r}: write workers=N, web=N or web=MIN..MAX, scp=per-node "
                "(one SCP set, scp_processes actors, on every node with the dimse role)"
            )
    return parsed


def cmd_scale(settings: Settings, args: argparse.Namespace) -> int:
    import ray

    try:
        counts = parse_counts(args.counts)
    except ValueError as err:
        print(f"dicomflow: {err}", file=sys.stderr)
        return 2
    try:
        report = ray.get(_controller(settings).scale.remote(counts.get("workers"), counts.get("web")), timeout=600)
    finally:
        ray.shutdown()
    print_cluster(report)
    return 0
