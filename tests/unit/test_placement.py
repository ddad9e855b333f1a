"""Placement rules of the cluster controller, over `ray.nodes()`-shaped data (no Ray started)."""

from __future__ import annotations

import pytest

from archive.config.settings import Settings
from cluster.cli_cluster import parse_counts
from cluster.placement import Node, alive_nodes, blob_problem, node_settings, role_resources

RAY_NODES = [
    {
        "NodeID": "b" * 56,
        "Alive": True,
        "NodeManagerAddress": "10.0.0.7",
        "Resources": {"CPU": 2.0, "dicomflow_dimse": 1.0, "dicomflow_worker": 1.0},
    },
    {
        "NodeID": "a" * 56,
        "Alive": True,
        "NodeManagerAddress": "10.0.0.5",
        "Resources": {
            "CPU": 2.0,
            "node:__internal_head__": 1.0,
            "dicomflow_dimse": 1.0,
            "dicomflow_web": 1.0,
            "dicomflow_worker": 1.0,
        },
    },
    {"NodeID": "c" * 56, "Alive": False, "NodeManagerAddress": "10.0.0.9", "Resources": {"dicomflow_dimse": 1.0}},
]


def test_alive_nodes_read_roles_from_resources_head_first() -> None:
    nodes = alive_nodes(RAY_NODES)
    assert [(n.address, n.is_head, sorted(n.roles)) for n in nodes] == [
        ("10.0.0.5", True, ["dimse", "web", "worker"]),
        ("10.0.0.7", False, ["dimse", "worker"]),
    ]


def test_role_resources_refuse_an_unknown_role() -> None:
    assert role_resources(["dimse", "worker"]) == {"dicomflow_dimse": 1.0, "dicomflow_worker": 1.0}
    with pytest.raises(ValueError, match="storage"):
        role_resources(["storage"])


def test_a_second_node_needs_blobs_every_node_sees(tmp_path) -> None:
    head, other = Node("h", "10.0.0.5", frozenset({"dimse"}), True), Node("o", "10.0.0.7", frozenset({"dimse"}), False)
    local = Settings(var_dir=tmp_path)
    assert blob_problem(local, head) is None
    assert "s3_endpoint" in (blob_problem(local, other) or "")
    assert blob_problem(Settings(var_dir=tmp_path, blob_dir_shared=True), other) is None
    assert blob_problem(Settings(var_dir=tmp_path, s3_endpoint="s3.example:9000"), other) is None


def test_an_actor_on_another_node_listens_there_and_gets_no_secret_in_its_arguments(tmp_path) -> None:
    """Issue 27 item 8: passwords travelled to other nodes' actors as their arguments (Ray keeps
    those and its dashboard shows them). Now every actor reads var/secrets where it runs."""
    from archive.config.embedded_secrets import POSTGRES_APP, REDIS, ensure_secret

    ensure_secret(tmp_path, POSTGRES_APP)
    ensure_secret(tmp_path, REDIS)
    head = Settings(var_dir=tmp_path, bind_host="10.0.0.5", postgres_port=15000)
    there = node_settings(head, Node("o", "10.0.0.7", frozenset({"dimse"}), False))
    assert there.bind_host == "10.0.0.7"
    arguments = there.model_dump_json()
    for secret in (tmp_path / "secrets").iterdir():
        assert secret.read_text().strip() not in arguments, f"{secret.name} would travel as an actor argument"
    # where it runs, the node reads them and reaches the embedded services at the addresses the head's
    # own processes use: on another host, its end of the node link (cluster/node_link.py) listens there
    assert "@127.0.0.1:15000/" in there.effective_postgres_dsn()
    assert there.effective_postgres_dsn() == head.effective_postgres_dsn()
    assert there.effective_temporal_address() == head.effective_temporal_address()


def test_scale_counts() -> None:
    assert parse_counts(["workers=4"]) == {"workers": 4}
    assert parse_counts(["workers=4", "web=2..8", "scp=per-node"]) == {"workers": 4, "web": (2, 8)}
    assert parse_counts(["web=3"]) == {"web": (3, None)}
    for wrong in (["web=0"], ["web=8..2"], ["web=2..x"], ["scp=4"], ["workers=-1"], ["gpus=1"]):
        with pytest.raises(ValueError, match="web=N or web=MIN..MAX"):
            parse_counts(wrong)


def test_web_bounds_become_serve_replica_options() -> None:
    from cluster.web_scaling import with_web_bounds
    from serve.deployment import replica_options

    fixed = with_web_bounds(Settings(), 3, None)
    assert replica_options(fixed.web) == {"num_replicas": 3}
    auto = replica_options(with_web_bounds(Settings(serve_target_ongoing_requests=2), 2, 8).web)
    assert auto["num_replicas"] == "auto"
    assert auto["autoscaling_config"] == {
        "min_replicas": 2,
        "initial_replicas": 2,
        "max_replicas": 8,
        "target_ongoing_requests": 2,
    }
    with pytest.raises(ValueError, match="serve_max_replicas"):
        Settings(serve_replicas=4, serve_max_replicas=2)


def test_a_node_joins_a_loopback_head_by_the_address_ray_does_not_rewrite() -> None:
    from cluster.cli_cluster import gcs_address_for_node

    assert gcs_address_for_node("127.0.0.1:41234") == "[::ffff:127.0.0.1]:41234"
    assert gcs_address_for_node("10.0.0.5:6379") == "10.0.0.5:6379"


def test_a_node_on_another_host_reaches_the_embedded_services_only_by_node_links(tmp_path) -> None:
    """Issue 27 items 1 and 8: the embedded PostgreSQL, Redis and Temporal listen on the head's loopback
    only (no TLS in the wheels, no authentication in the dev server); another host's node needs the
    mutual-TLS node links, or external services."""
    from cluster.placement import placement_problem

    head = Settings(var_dir=tmp_path, bind_host="10.0.0.5", s3_endpoint="s3.example:9000")
    assert head.effective_temporal_address().startswith("127.0.0.1:"), "not on bind_host: it would be an open door"
    assert "@127.0.0.1:" in head.effective_postgres_dsn() and "//127.0.0.1:" in head.effective_redis_url()
    remote = Node("o", "10.0.0.7", frozenset({"web"}), False)
    assert "tls_ca_file" in (placement_problem(head, remote) or "")
    same_host = Node("l", "127.0.0.1", frozenset({"worker", "dimse"}), False)
    assert placement_problem(head, same_host) is None
    linked = head.with_values(tls_cert_file=tmp_path / "a.pem", tls_key_file=tmp_path / "a.key", tls_ca_file=tmp_path / "ca.pem")
    assert placement_problem(linked, remote) is None
    external = head.with_values(
        temporal_address="temporal.example:7233", postgres_dsn="host=db", redis_url="rediss://cache:6380/0"
    )
    assert placement_problem(external, remote) is None


def test_rays_token_is_readable_by_its_owner_only(tmp_path, monkeypatch) -> None:
    """Issue 27 item 8: Ray wrote ~/.ray/auth_token 0644, and the token opens the whole cluster."""
    import stat

    from cluster.ray_env import protect_ray_token

    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("RAY_AUTH_TOKEN_PATH", raising=False)
    made = protect_ray_token()
    assert made == tmp_path / ".ray" / "auth_token" and len(made.read_text()) == 64
    assert stat.S_IMODE(made.stat().st_mode) == 0o600 and stat.S_IMODE(made.parent.stat().st_mode) == 0o700
    token = made.read_text()
    made.chmod(0o644)  # as Ray leaves it
    assert protect_ray_token().read_text() == token, "an existing token is kept"
    assert stat.S_IMODE(made.stat().st_mode) == 0o600
