"""pynetdicom's association server with the socket options that make C-STORE fast.

Without TCP_NODELAY and a re-armed TCP_QUICKACK, each C-STORE round trip stalls ~50 ms on
Nagle/delayed-ACK (15-20 instances/s on loopback). SO_REUSEPORT lets several SCP processes share
one port so a node uses all its cores.

No single socket may hold the listener: pynetdicom's server does the TLS handshake in its accept
loop (one silent connection on the TLS port stopped every other for the socket timeout: a TLS
C-ECHO waited 5.5 s behind one idle socket with a 6 s timeout), so here the handshake runs on the
connection's own thread, bounded by the ACSE timeout. Connections are counted per peer address at
accept, before TLS and before the AE table is consulted, so one host cannot hold every thread.
"""

from __future__ import annotations

import logging
import socket
import ssl
import threading
from collections.abc import Mapping
from typing import Any

from pynetdicom import AE, evt
from pynetdicom.association import Association
from pynetdicom.transport import ThreadedAssociationServer

from archive.identity.ae_rules import PeerCertificate

_QUICKACK = getattr(socket, "TCP_QUICKACK", None)
log = logging.getLogger("dicomflow.scp")


class QuickAckSocket(socket.socket):
    """Re-arms TCP_QUICKACK before every receive: Linux clears it after each ACK it sends."""

    def recv(self, bufsize: int, flags: int = 0) -> bytes:  # type: ignore[override]
        if _QUICKACK is not None:
            try:
                self.setsockopt(socket.IPPROTO_TCP, _QUICKACK, 1)
            except OSError:
                pass
        return super().recv(bufsize, flags)


Request = socket.socket | tuple[bytes, socket.socket]  # socketserver's request (a TCP server's is the socket)
Address = tuple[str, int] | str


def _host(address: Address) -> str:
    return address if isinstance(address, str) else str(address[0])


class PeerConnections:
    """Open TCP connections per peer address. A connection counts until its socket is closed
    (pynetdicom closes it on every way an association ends); a TLS connection is its wrapped socket
    from the handshake on (wrapping detaches, and so closes, the plain one)."""

    SWEEP_AT = 1024  # peer addresses remembered before those with nothing open are forgotten

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._open: dict[str, list[socket.socket]] = {}
        self._lock = threading.Lock()

    def admit(self, host: str, sock: socket.socket) -> bool:
        with self._lock:
            live = self._live(host)
            if len(live) >= self.limit:
                return False
            live.append(sock)
            if len(self._open) > self.SWEEP_AT:  # many addresses came and went (a scan): forget the closed
                self._open = {h: socks for h in list(self._open) if (socks := self._live(h))}
            return True

    def replace(self, host: str, old: socket.socket, new: socket.socket) -> None:
        with self._lock:
            self._open[host] = [new if s is old else s for s in self._open.get(host, [])]

    def held(self, host: str) -> int:
        with self._lock:
            return len(self._live(host))

    def _live(self, host: str) -> list[socket.socket]:
        """The host's sockets still open (the list kept is this one); the lock is held."""
        live = self._open[host] = [s for s in self._open.get(host, []) if s.fileno() != -1]
        return live


class FastAssociationServer(ThreadedAssociationServer):
    def __init__(self, *args: Any, connections_per_peer: int, handshake_timeout: float, **kwargs: Any) -> None:
        self.connections = PeerConnections(connections_per_peer)
        self.handshake_timeout = handshake_timeout
        super().__init__(*args, **kwargs)

    def server_bind(self) -> None:
        assert self.socket is not None  # TCPServer.__init__ creates it before binding
        if hasattr(socket, "SO_REUSEPORT"):
            self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        super().server_bind()

    def get_request(self) -> tuple[socket.socket, tuple[str, int]]:
        """The accepted socket, tuned; nothing here may wait on the peer (this is the accept loop)."""
        assert self.socket is not None  # created in __init__, kept until server_close
        client, address = self.socket.accept()
        tuned = QuickAckSocket(client.family, client.type, client.proto, fileno=client.detach())
        tuned.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        tuned.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * 1024 * 1024)
        if self.ae.network_timeout is not None:
            tuned.settimeout(self.ae.network_timeout)
        return tuned, address

    def verify_request(self, request: Request, client_address: Address) -> bool:
        """At accept, before TLS and the AE table: refused, the socket is closed at once."""
        host = _host(client_address)
        if isinstance(request, socket.socket) and self.connections.admit(host, request):
            return True
        log.warning("connection from %s refused: it holds %d (dimse_max_connections_per_peer)", host, self.connections.limit)
        return False

    def finish_request(self, request: Request, client_address: Address) -> None:
        """On the connection's own thread: the TLS handshake first, then pynetdicom's association."""
        if self.ssl_context is not None and isinstance(request, socket.socket):
            wrapped = self._handshake(request, _host(client_address))
            if wrapped is None:
                return
            request = wrapped
        super().finish_request(request, client_address)

    def _handshake(self, raw: socket.socket, host: str) -> ssl.SSLSocket | None:
        """DICOM TLS (and the client certificate check), within the ACSE timeout; None: failed, closed."""
        assert self.ssl_context is not None
        raw.settimeout(self.handshake_timeout)
        try:
            wrapped = self.ssl_context.wrap_socket(raw, server_side=True)
        except (OSError, ValueError) as err:  # ssl.SSLError and timeouts are OSErrors
            log.info("DICOM TLS handshake with %s failed: %s", host, err)
            raw.close()
            return None
        self.connections.replace(host, raw, wrapped)
        wrapped.settimeout(self.ae.network_timeout)
        return wrapped


def serve_in_thread(
    ae: AE,
    address: tuple[str, int],
    handlers: list[evt.EventHandlerType],
    ssl_context: ssl.SSLContext | None,
    connections_per_peer: int,
) -> ThreadedAssociationServer:
    """`ae.start_server(block=False)` with FastAssociationServer; registered with the AE as
    start_server registers its own, so `ae.shutdown()` stops it too. The TLS handshake is bounded
    by the AE's ACSE timeout, like the wait for the A-ASSOCIATE-RQ that follows it."""
    server = ae.make_server(
        address,
        evt_handlers=handlers,
        server_class=FastAssociationServer,
        ssl_context=ssl_context,
        connections_per_peer=connections_per_peer,
        handshake_timeout=ae.acse_timeout or 30,
    )
    ae._servers.append(server)  # noqa: SLF001 - pynetdicom's start_server does the same with its own server
    threading.Thread(target=server.serve_forever, name=f"dicomflow-scp-{address[1]}", daemon=True).start()
    return server


def peer_certificate(assoc: Association) -> PeerCertificate | None:
    """The client certificate presented on this association's TLS connection (verified against the
    CA by the handshake); None over plain TCP or when none was presented."""
    transport = assoc.dul.socket
    raw = transport.socket if transport is not None else None
    if not isinstance(raw, ssl.SSLSocket):
        return None
    der = raw.getpeercert(binary_form=True)
    if not der:
        return None
    return PeerCertificate.from_der(der, _common_name(raw.getpeercert() or {}))


def _common_name(cert: Mapping[str, Any]) -> str | None:
    """The subject's CN from `SSLSocket.getpeercert()`: a tuple of RDNs, each a tuple of (key, value)."""
    for rdn in cert.get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                return str(value)
    return None
