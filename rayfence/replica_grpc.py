"""Keeps each Serve replica's inter-deployment gRPC port on this node's Ray address.

Ray starts that server on `[::]:0` (every interface) with no setting for the address. dicomflow has
one deployment and HAProxy talks to the replica's HTTP port, so the port serves nothing of ours, but
"nothing listens beyond bind_host" must still hold. The replica looks the helper up at call time,
after our deployment's constructor ran, so replacing it there rebinds the server to the address Ray
advertises for the node (loopback on one machine, the node's own address in a cluster).
"""

from __future__ import annotations

from typing import Any

_WILDCARD = "[::]:"


def pin_inter_deployment_grpc(node_address: str) -> bool:
    """True when Ray's replica module was patched; False if Ray changed and no longer has the hook."""
    from ray.serve._private import replica

    original = getattr(replica, "add_port_to_grpc_server", None)
    if original is None or getattr(original, "__module__", None) == __name__:
        return original is not None
    host = f"[{node_address}]" if ":" in node_address else node_address

    def pinned(server: Any, address: str) -> int:
        if address.startswith(_WILDCARD):
            address = f"{host}:{address.removeprefix(_WILDCARD)}"
        return original(server, address)

    replica.add_port_to_grpc_server = pinned
    return True
