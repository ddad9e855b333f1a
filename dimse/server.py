"""pynetdicom's association server with the socket options that make C-STORE fast.

Without TCP_NODELAY and a re-armed TCP_QUICKACK, each C-STORE round trip stalls ~50 ms on
Nagle/delayed-ACK (15-20 instances/s on loopback). SO_REUSEPORT lets several SCP processes share
one port so a node uses all its cores.
"""

from __future__ import annotations

import socket
import ssl
import threading

from pynetdicom import AE, evt
from pynetdicom.transport import ThreadedAssociationServer

_QUICKACK = getattr(socket, "TCP_QUICKACK", None)


class QuickAckSocket(socket.socket):
    """Re-arms TCP_QUICKACK before every receive: Linux clears it after each ACK it sends."""

    def recv(self, bufsize: int, flags: int = 0) -> bytes:  # type: ignore[override]
        if _QUICKACK is not None:
            try:
                self.setsockopt(socket.IPPROTO_TCP, _QUICKACK, 1)
            except OSError:
                pass
        return super().recv(bufsize, flags)


class FastAssociationServer(ThreadedAssociationServer):
    def server_bind(self) -> None:
        assert self.socket is not None  # TCPServer.__init__ creates it before binding
        if hasattr(socket, "SO_REUSEPORT"):
            self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        super().server_bind()

    def get_request(self) -> tuple[socket.socket, tuple[str, int]]:
        assert self.socket is not None  # created in __init__, kept until server_close
        client, address = self.socket.accept()
        tuned = QuickAckSocket(client.family, client.type, client.proto, fileno=client.detach())
        tuned.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        tuned.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * 1024 * 1024)
        if self.ae.network_timeout is not None:
            tuned.settimeout(self.ae.network_timeout)
        if self.ssl_context:  # DICOM TLS: the handshake (and client certificate check) happens here
            return self.ssl_context.wrap_socket(tuned, server_side=True), address
        return tuned, address


def serve_in_thread(ae: AE, address: tuple[str, int], handlers: list[evt.EventHandlerType],
                    ssl_context: ssl.SSLContext | None) -> ThreadedAssociationServer:
    """`ae.start_server(block=False)` with FastAssociationServer; registered with the AE as
    start_server registers its own, so `ae.shutdown()` stops it too."""
    server = ae.make_server(address, evt_handlers=handlers, server_class=FastAssociationServer, ssl_context=ssl_context)
    ae._servers.append(server)  # noqa: SLF001 - pynetdicom's start_server does the same with its own server
    threading.Thread(target=server.serve_forever, name=f"dicomflow-scp-{address[1]}", daemon=True).start()
    return server
