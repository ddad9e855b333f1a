"""Live DICOMweb replicas per node, from Ray's state API. Serve names a replica's actor class
`ServeReplica:{app}:{deployment}`: a convention, not an API, hence its place in the fence."""

from __future__ import annotations

from collections import Counter


def replica_actor_class(app: str, deployment: str) -> str:
    return f"ServeReplica:{app}:{deployment}"


def replicas_by_node(app: str, deployment: str) -> Counter[str]:
    """Live replica actors of one deployment per Ray node id (served by the head's dashboard)."""
    import ray
    from ray.util.state import list_actors

    alive = list_actors(
        address=ray.get_runtime_context().gcs_address,
        timeout=10,
        filters=[("class_name", "=", replica_actor_class(app, deployment)), ("state", "=", "ALIVE")],
    )
    return Counter(actor.node_id for actor in alive if actor.node_id)
