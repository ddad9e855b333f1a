"""Which node runs what: node roles as Ray custom resources, and the settings an actor on a given
node gets. Pure functions over `ray.nodes()`-shaped dicts, so they read (and test) without Ray."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from archive.config.sections import ALL_NODE_ROLES
from archive.config.settings import Settings, is_loopback
from cluster.node_link import embedded_ports, links_configured
from rayfence.resources import RESOURCE_PREFIX

ROLES = ALL_NODE_ROLES


def role_resources(roles: Iterable[str]) -> dict[str, float]:
    """The custom resources a node starts with: one unit per role it has."""
    unknown = sorted(set(roles) - set(ROLES))
    if unknown:
        raise ValueError(f"unknown node role(s) {', '.join(unknown)}: choose from {', '.join(ROLES)}")
    return {RESOURCE_PREFIX + role: 1.0 for role in roles}


@dataclass(frozen=True)
class Node:
    node_id: str
    address: str
    roles: frozenset[str]
    is_head: bool


def alive_nodes(ray_nodes: Iterable[Mapping[str, Any]]) -> list[Node]:
    """The nodes Ray reports alive, with the dicomflow roles their resources declare."""
    found = []
    for entry in ray_nodes:
        if not entry.get("Alive"):
            continue
        resources = entry.get("Resources") or {}
        roles = frozenset(key.removeprefix(RESOURCE_PREFIX) for key in resources if key.startswith(RESOURCE_PREFIX))
        is_head = any(key.startswith("node:__internal_head__") for key in resources)
        found.append(Node(entry["NodeID"], entry["NodeManagerAddress"], roles, is_head))
    return sorted(found, key=lambda node: (not node.is_head, node.address, node.node_id))


def node_settings(settings: Settings, node: Node) -> Settings:
    """Settings for an actor on `node`: the head's, listening on the node's own address. No secret
    travels in them (actor arguments are kept by Ray and shown by its dashboard): every actor reads
    the embedded services' passwords and keys from var/secrets where it runs, and reaches those
    services at 127.0.0.1, where a node on another host has its end of the node links. So a node on
    another host needs the head's var/secrets (0600) at the same var_dir; `dicomflow join` checks."""
    if node.is_head:
        return settings
    return settings.with_values(bind_host=node.address)


def link_problem(settings: Settings, node: Node) -> str | None:
    """Why `node` cannot reach the head's embedded PostgreSQL, Redis or Temporal: they listen on the
    head's loopback only, so a node on another host needs node links (mutual TLS with certificates
    from `dicomflow certs`), or external services (postgres_dsn, redis_url, temporal_address)."""
    if node.is_head or is_loopback(node.address) or not embedded_ports(settings):
        return None
    if links_configured(settings) and not settings.bind_is_loopback:
        return None
    return (
        f"node {node.address} cannot reach the head's embedded PostgreSQL, Redis and Temporal, which listen on loopback only. "
        "Give the head a network bind_host and tls_cert_file, tls_key_file and tls_ca_file (dicomflow certs) so nodes reach them "
        "over mutual TLS (node links), or set postgres_dsn, redis_url and temporal_address to servers every node can reach"
    )


def placement_problem(settings: Settings, node: Node) -> str | None:
    """Why `node` may not run dicomflow's actors (the first reason found)."""
    if node.roles & {"dimse", "worker"}:
        problem = blob_problem(settings, node)
        if problem:
            return problem
    return link_problem(settings, node)


def blob_problem(settings: Settings, node: Node) -> str | None:
    """Why `node` may not receive objects: blobs on local disk are invisible to every other node."""
    if node.is_head or settings.storage.backend == "s3" or settings.cluster.blob_dir_shared:
        return None
    return (
        f"node {node.address} cannot store objects: blobs are on the head's local disk ({settings.var_path / 'blobs'}). "
        "Set s3_endpoint (S3/MinIO), or blob_dir_shared = true when var_dir is on storage every node mounts"
    )
