"""Runs Ray Serve's HAProxy with its stats and metrics listeners on `bind_host`.

Ray's HAProxy template binds those two to every interface and has no setting for the address, so
Ray is pointed (RAY_SERVE_HAPROXY_BINARY_PATH) at a small script that calls this module: it
rewrites the wildcard `bind` lines of the configuration Ray passes with `-f`, then becomes the real
HAProxy (same pid, same arguments), so Ray's reloads and signals work as before.

With https on, the DICOMweb frontend's bind (the one on http_port) also gets `ssl crt PEM`:
HAProxy terminates TLS and the replicas behind it are unchanged.

Usage: python -m rayfence.haproxy_shim REAL_HAPROXY BIND_HOST TLS [haproxy arguments...]
where TLS is `PORT=PEM_FILE` for HTTPS on PORT, or `-` for none.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

_WILDCARD_BIND = re.compile(r"^(\s*bind\s+)(?:\*|0\.0\.0\.0|::|\[::\])?:(\d+)", re.MULTILINE)


def pin_binds(config: str, host: str) -> str:
    """Every `bind *:PORT` / `bind :PORT` becomes `bind HOST:PORT`; explicit addresses stay."""
    return _WILDCARD_BIND.sub(lambda m: f"{m.group(1)}{host}:{m.group(2)}", config)


def add_tls(config: str, port: int, pem: str) -> str:
    """The bind on `port` terminates TLS 1.2+ with the certificate and key in `pem`."""
    bind = re.compile(rf"^(\s*bind\s+\S*:{port})(\s|$)(?!.*\bssl\b)", re.MULTILINE)
    # the replicas behind it see plain HTTP; the header makes the URLs they hand out (BulkDataURI,
    # RetrieveURL) https, and replaces whatever a client sent in it
    return bind.sub(
        lambda m: (
            f"{m.group(1)} ssl crt {pem} ssl-min-ver TLSv1.2 alpn http/1.1{m.group(2)}"
            "    http-request set-header X-Forwarded-Proto https\n"
        ),
        config,
    )


_DICOMWEB_FRONTEND = re.compile(r"^(frontend\s+http_frontend\s*\n)", re.MULTILINE)


def set_forwarded_for(config: str) -> str:
    """The replicas' uvicorn trusts X-Forwarded-For from 127.0.0.1, where HAProxy connects from; so
    HAProxy must replace whatever a client sent with the address it really came from, or the audit
    trail would record a peer of the client's choosing."""
    if "set-header X-Forwarded-For" in config:
        return config
    return _DICOMWEB_FRONTEND.sub(lambda m: m.group(1) + "    http-request set-header X-Forwarded-For %[src]\n", config)


def rewrite(config: str, host: str, tls: str) -> str:
    pinned = set_forwarded_for(pin_binds(config, host))
    if tls == "-":
        return pinned
    port, pem = tls.split("=", 1)
    return add_tls(pinned, int(port), pem)


def config_path(args: list[str]) -> Path | None:
    for flag, value in zip(args, args[1:]):
        if flag == "-f":
            return Path(value)
    return None


def main(argv: list[str] | None = None) -> None:
    real, host, tls, *args = argv if argv is not None else sys.argv[1:]
    path = config_path(args)
    if path is not None and path.exists():
        text = path.read_text()
        rewritten = rewrite(text, host, tls)
        if rewritten != text:
            path.write_text(rewritten)
    os.execv(real, [real, *args])


if __name__ == "__main__":
    main()
