"""How HTTPS reaches DICOMweb: HAProxy's generated configuration rewritten by our shim, or Serve's
own proxy given the certificate. The running HTTPS stack is tested in tests/test_security.py."""

from __future__ import annotations

from archive.config.settings import Settings
from rayfence.haproxy_shim import rewrite

RAY_TEMPLATE = """frontend prometheus
    bind :9101
frontend http_frontend
    bind 127.0.0.1:8000
    mode http
frontend grpc_frontend
    bind 127.0.0.1:9000 proto h2
listen stats
  bind *:8404
"""


def test_only_the_dicomweb_bind_terminates_tls_and_every_wildcard_is_pinned() -> None:
    config = rewrite(RAY_TEMPLATE, "10.0.0.5", "8000=/var/run/h/dicomweb.pem")
    lines = [line.strip() for line in config.splitlines()]
    assert "bind 127.0.0.1:8000 ssl crt /var/run/h/dicomweb.pem ssl-min-ver TLSv1.2 alpn http/1.1" in lines
    assert lines[lines.index("frontend http_frontend") + 3] == "http-request set-header X-Forwarded-Proto https"
    assert "bind 10.0.0.5:9101" in lines and "bind 10.0.0.5:8404" in lines
    assert sum("ssl crt" in line for line in lines) == 1
    assert rewrite(config, "10.0.0.5", "8000=/var/run/h/dicomweb.pem") == config  # Ray's reloads rewrite again


def test_without_https_only_the_wildcards_and_the_forwarded_address_change() -> None:
    config = rewrite(RAY_TEMPLATE, "127.0.0.1", "-")
    assert "ssl" not in config and "X-Forwarded-Proto" not in config
    assert "bind 127.0.0.1:9101" in config


def test_haproxy_replaces_the_clients_forwarded_for_with_its_address() -> None:
    """Issue 27 item 7: uvicorn trusts X-Forwarded-For from 127.0.0.1 (HAProxy), which passed a
    client's own header through, so the audit trail's peer was the client's choice."""
    for tls in ("-", "8000=/var/run/h/dicomweb.pem"):
        lines = [line.strip() for line in rewrite(RAY_TEMPLATE, "127.0.0.1", tls).splitlines()]
        start = lines.index("frontend http_frontend")
        section = lines[start : lines.index("frontend grpc_frontend")]
        assert "http-request set-header X-Forwarded-For %[src]" in section
        assert sum("X-Forwarded-For" in line for line in lines) == 1


def test_serves_own_proxy_gets_the_certificate_only_when_it_terminates_tls(tmp_path) -> None:
    from cluster.ray_runtime import http_options

    cert, key = tmp_path / "archive.pem", tmp_path / "archive.key"
    proxy = Settings(https=True, tls_cert_file=cert, tls_key_file=key, serve_ingress="proxy", http_port=8443)
    assert http_options(proxy) == {"host": "127.0.0.1", "port": 8443, "ssl_certfile": str(cert), "ssl_keyfile": str(key)}
    haproxy = Settings(https=True, tls_cert_file=cert, tls_key_file=key, serve_ingress="haproxy", http_port=8443)
    assert "ssl_certfile" not in http_options(haproxy)
