"""Node links: how a node on another host reaches the head's embedded PostgreSQL, Redis and
Temporal, which listen on the head's loopback only (the wheels' PostgreSQL and Redis are built
without TLS, and the Temporal dev server has no authentication).

On the head, `serve` listens on `bind_host` at each service's port and relays to the same port on
127.0.0.1, accepting only TLS connections whose client certificate chains to the archive's CA
(`dicomflow certs issue NODE --kind client`). On a joined node, `connect` listens on 127.0.0.1 at
the same ports and relays each connection to the head over that mutual TLS, with the node's own
certificate. The node's actors then use the very addresses the head's own processes use
(127.0.0.1 and the service's port), and nothing crosses the network in clear.

    python -m cluster.node_link serve HOST PORT[,PORT...] CERT KEY CA
    python -m cluster.node_link connect HEAD PORT[,PORT...] CERT KEY CA

A PORT may be LISTEN:TARGET when the two sides' ports differ (the archive uses the same on both).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

from archive.config.settings import Settings
from cluster.services.process import ManagedProcess

log = logging.getLogger("dicomflow.node_link")
LOOPBACK = "127.0.0.1"
CHUNK = 256 * 1024
HANDSHAKE_SECONDS = 10.0


def server_context(cert: Path, key: Path, ca: Path) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(ca))
    context.load_cert_chain(str(cert), str(key))
    context.verify_mode = ssl.CERT_REQUIRED  # a node proves itself with a certificate from our CA
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


def client_context(cert: Path, key: Path, ca: Path) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(ca))
    context.load_cert_chain(str(cert), str(key))
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while chunk := await reader.read(CHUNK):
            writer.write(chunk)
            await writer.drain()
    except (ConnectionError, ssl.SSLError):
        pass
    finally:
        with contextlib.suppress(Exception):
            writer.close()


async def _join(
    a: tuple[asyncio.StreamReader, asyncio.StreamWriter], b: tuple[asyncio.StreamReader, asyncio.StreamWriter]
) -> None:
    await asyncio.gather(_pipe(a[0], b[1]), _pipe(b[0], a[1]))


Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


def _relay(target_host: str, port: int, tls: ssl.SSLContext | None) -> Handler:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            upstream = await asyncio.wait_for(
                asyncio.open_connection(target_host, port, ssl=tls, server_hostname=target_host if tls else None),
                HANDSHAKE_SECONDS,
            )
        except (OSError, ssl.SSLError, TimeoutError) as err:
            log.warning("node link: %s:%d unreachable: %s", target_host, port, err)
            writer.close()
            return
        await _join((reader, writer), upstream)

    return handle


PortPair = tuple[int, int]  # (listen, target)


def parse_ports(text: str) -> list[PortPair]:
    pairs = []
    for part in text.split(","):
        listen, _, target = part.partition(":")
        pairs.append((int(listen), int(target or listen)))
    return pairs


async def serve(host: str, ports: list[PortPair], tls: ssl.SSLContext) -> None:
    """The head's side: mutual TLS on `host`, plain to loopback."""
    servers = [
        await asyncio.start_server(_relay(LOOPBACK, target, None), host, listen, ssl=tls, ssl_handshake_timeout=HANDSHAKE_SECONDS)
        for listen, target in ports
    ]
    await asyncio.gather(*(s.serve_forever() for s in servers))


async def connect(head: str, ports: list[PortPair], tls: ssl.SSLContext) -> None:
    """A joined node's side: plain on loopback, mutual TLS to the head."""
    servers = [await asyncio.start_server(_relay(head, target, tls), LOOPBACK, listen) for listen, target in ports]
    await asyncio.gather(*(s.serve_forever() for s in servers))


def links_configured(settings: Settings) -> bool:
    """Node links need the archive's certificate, its key and the CA nodes' certificates chain to."""
    return bool(settings.tls.cert_file and settings.tls.key_file and settings.tls.ca_file)


def embedded_ports(settings: Settings) -> list[int]:
    """The ports of the services this archive started itself, which other nodes reach by a link."""
    ports = []
    if settings.index.dsn is None:
        ports.append(settings.index.port)
    if settings.cache.url is None:
        ports.append(settings.cache.port)
    if settings.temporal.address is None:
        ports.append(settings.temporal.port)
    return ports


def node_link_service(settings: Settings, mode: str, host: str) -> ManagedProcess:
    assert settings.tls.cert_file and settings.tls.key_file and settings.tls.ca_file
    ports = ",".join(str(p) for p in embedded_ports(settings))
    argv = [sys.executable, "-m", "cluster.node_link", mode, host, ports]
    argv += [str(settings.tls.cert_file), str(settings.tls.key_file), str(settings.tls.ca_file)]
    return ManagedProcess(
        name=f"node-link-{mode}", argv=argv, run_dir=settings.var_path / "run", log_dir=settings.var_path / "log"
    )


def main(argv: list[str]) -> None:
    mode, host, ports, cert, key, ca = argv
    pairs = parse_ports(ports)
    logging.basicConfig(level=logging.WARNING)
    if mode == "serve":
        asyncio.run(serve(host, pairs, server_context(Path(cert), Path(key), Path(ca))))
    elif mode == "connect":
        asyncio.run(connect(host, pairs, client_context(Path(cert), Path(key), Path(ca))))
    else:
        raise SystemExit(f"node_link: mode must be serve or connect, not {mode!r}")


if __name__ == "__main__":
    main(sys.argv[1:])
