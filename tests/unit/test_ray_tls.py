"""Ray's gRPC in mutual TLS (issue 27 item 8): when it is on, with which files, and which
certificates a joining node may bring (every node's Ray processes serve the others)."""

from __future__ import annotations

import pytest

from archive.config.settings import Settings
from cluster.certs import init_ca, issue, names_host, serves_tls
from cluster.ray_env import RayTlsError, ray_tls_files, use_ray_tls


def test_a_server_certificate_serves_and_a_client_one_does_not(tmp_path):
    init_ca(tmp_path)
    server, _ = issue(tmp_path, "head", "server", ["10.1.2.3"])
    client, _ = issue(tmp_path, "node-b", "client")
    assert serves_tls(server) and not serves_tls(client)


def test_ray_tls_is_on_for_a_network_address_with_the_archives_certificates(tmp_path):
    ca = init_ca(tmp_path)
    cert, key = issue(tmp_path, "head", "server", ["10.1.2.3"])
    files = {"tls_cert_file": cert, "tls_key_file": key, "tls_ca_file": ca}
    network = Settings(var_dir=tmp_path / "var", bind_host="10.1.2.3", auth="none", **files)
    assert ray_tls_files(network) == (cert.resolve(), key.resolve(), ca.resolve())
    assert ray_tls_files(Settings(var_dir=tmp_path / "var", **files)) is None, "loopback: one machine, nothing on the wire"
    assert ray_tls_files(Settings(var_dir=tmp_path / "var", bind_host="10.1.2.3", auth="none")) is None, "no certificates"


def test_a_certificate_that_does_not_name_the_address_is_refused_before_ray_starts(tmp_path, monkeypatch):
    ca = init_ca(tmp_path)
    cert, key = issue(tmp_path, "head", "server")  # 127.0.0.1 and localhost only
    assert names_host(cert, "127.0.0.1") and names_host(cert, "LOCALHOST") and not names_host(cert, "10.1.2.3")
    settings = Settings(
        var_dir=tmp_path / "var", bind_host="10.1.2.3", auth="none", tls_cert_file=cert, tls_key_file=key, tls_ca_file=ca
    )
    monkeypatch.delenv("RAY_USE_TLS", raising=False)
    with pytest.raises(RayTlsError, match="--hosts 10.1.2.3"):
        use_ray_tls(settings)
