"""Node links (issue 27 item 8): a node on another host reaches the head's embedded PostgreSQL,
Redis and Temporal, which listen on loopback only, through a mutual-TLS relay. Here both ends run
on this machine as `dicomflow join` and `up` run them (python -m cluster.node_link), the head's end
on 127.0.0.2 in front of the session stack's own servers, and real clients go through."""

from __future__ import annotations

import asyncio
import socket
import ssl
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import psycopg
import pytest
import redis

from cluster.certs import init_ca, issue
from testkit.running_stack import free_port

HEAD = "127.0.0.2"


@pytest.fixture(scope="module")
def link_pki(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("links")
    ca = init_ca(folder)
    head, head_key = issue(folder, "head", "server", hosts=[HEAD])
    node, node_key = issue(folder, "node-b", "client")
    return {"ca": ca, "head": head, "head_key": head_key, "node": node, "node_key": node_key}


def _wait_listening(host: str, port: int) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        with socket.socket() as probe:
            if probe.connect_ex((host, port)) == 0:
                return
        time.sleep(0.1)
    raise AssertionError(f"nothing listens on {host}:{port}")


@contextmanager
def _link(mode: str, host: str, ports: str, cert: Path, key: Path, ca: Path):
    process = subprocess.Popen([sys.executable, "-m", "cluster.node_link", mode, host, ports, str(cert), str(key), str(ca)])
    try:
        yield process
    finally:
        process.terminate()
        process.wait(timeout=10)


@pytest.fixture(scope="module")
def linked(stack, link_pki):
    """The head's end on 127.0.0.2 at the stack's ports; a node's end on free loopback ports."""
    s, k = stack.settings, link_pki
    services = [s.index.port, s.cache.port, s.temporal.port]
    local = {port: free_port() for port in services}
    with _link("serve", HEAD, ",".join(map(str, services)), k["head"], k["head_key"], k["ca"]):
        for port in services:
            _wait_listening(HEAD, port)
        node_ports = ",".join(f"{local[p]}:{p}" for p in services)
        with _link("connect", HEAD, node_ports, k["node"], k["node_key"], k["ca"]):
            for port in local.values():
                _wait_listening("127.0.0.1", port)
            yield local


def test_postgres_redis_and_temporal_answer_through_the_link(stack, linked):
    s = stack.settings
    dsn = psycopg.conninfo.make_conninfo(s.effective_postgres_dsn(), port=linked[s.index.port])
    with psycopg.connect(dsn, connect_timeout=10) as conn:
        assert conn.execute("SELECT current_user").fetchone() == ("dicomflow_app",)
    cache = redis.Redis.from_url(s.effective_redis_url().replace(f":{s.cache.port}/", f":{linked[s.cache.port]}/"))
    assert cache.ping()

    async def temporal_healthy() -> bool:
        from temporalio.client import Client

        client = await Client.connect(f"127.0.0.1:{linked[s.temporal.port]}", namespace=s.temporal.namespace)
        return await client.service_client.check_health()

    assert asyncio.run(temporal_healthy())


SSL_REQUEST = b"\x00\x00\x00\x08\x04\xd2\x16\x2f"  # PostgreSQL answers it with one byte, N or S


def _first_answer(port: int, context: ssl.SSLContext | None) -> bytes:
    """What the head's end sends back to PostgreSQL's SSLRequest: b'' when it closes on the caller."""
    try:
        with socket.create_connection((HEAD, port), timeout=10) as raw:
            if context is None:
                raw.sendall(SSL_REQUEST)
                return raw.recv(1)
            with context.wrap_socket(raw, server_hostname=HEAD) as tls:
                tls.sendall(SSL_REQUEST)
                return tls.recv(1)
    except (ssl.SSLError, ConnectionError, OSError):
        return b""


def test_the_heads_end_wants_a_client_certificate_from_the_archives_ca(stack, linked, link_pki, tmp_path):
    port = stack.settings.index.port
    node = ssl.create_default_context(cafile=str(link_pki["ca"]))
    node.load_cert_chain(str(link_pki["node"]), str(link_pki["node_key"]))
    assert _first_answer(port, node) in (b"N", b"S"), "a node's own certificate must pass (the check below could not fail)"
    assert _first_answer(port, ssl.create_default_context(cafile=str(link_pki["ca"]))) == b"", "no certificate"
    init_ca(tmp_path / "other")
    stranger, stranger_key = issue(tmp_path / "other", "stranger", "client")
    foreign = ssl.create_default_context(cafile=str(link_pki["ca"]))
    foreign.load_cert_chain(str(stranger), str(stranger_key))
    assert _first_answer(port, foreign) == b"", "a certificate of another CA"
    assert _first_answer(port, None) == b"", "a plain connection"
