"""Connections per peer address, counted at accept (dimse/server.PeerConnections), on real sockets:
a closed socket gives its slot back, and a TLS-wrapped one keeps the slot of the plain one."""

from __future__ import annotations

import socket

from dimse.server import PeerConnections


def test_a_peer_holds_at_most_the_limit_and_closed_sockets_give_slots_back() -> None:
    connections = PeerConnections(limit=2)
    pairs = [socket.socketpair() for _ in range(3)]
    try:
        assert connections.admit("10.0.0.1", pairs[0][0]) and connections.admit("10.0.0.1", pairs[1][0])
        assert not connections.admit("10.0.0.1", pairs[2][0])  # a third from the same address
        assert connections.admit("10.0.0.2", pairs[2][0])  # another address has its own count
        pairs[0][0].close()
        assert connections.held("10.0.0.1") == 1
        assert connections.admit("10.0.0.1", pairs[2][1])
    finally:
        for a, b in pairs:
            a.close()
            b.close()


def test_a_replaced_socket_keeps_its_slot() -> None:
    connections = PeerConnections(limit=1)
    plain, other = socket.socketpair()
    assert connections.admit("10.0.0.1", plain) is True
    wrapped = socket.socket(fileno=plain.detach())  # as ssl's wrap_socket does: the plain one is detached
    try:
        connections.replace("10.0.0.1", plain, wrapped)
        assert connections.held("10.0.0.1") == 1
        assert not connections.admit("10.0.0.1", other)
        wrapped.close()
        assert connections.admit("10.0.0.1", other)
    finally:
        wrapped.close()
        other.close()


def test_addresses_with_nothing_open_are_forgotten_once_many_came() -> None:
    connections = PeerConnections(limit=1)
    connections.SWEEP_AT = 2  # type: ignore[misc]
    pairs = [socket.socketpair() for _ in range(4)]
    try:
        for n, (ours, _) in enumerate(pairs[:3]):
            assert connections.admit(f"10.0.0.{n}", ours)
        pairs[0][0].close()
        pairs[1][0].close()
        assert connections.admit("10.0.0.9", pairs[3][0])  # the fourth address: the closed ones' go
        assert set(connections._open) == {"10.0.0.2", "10.0.0.9"}
    finally:
        for a, b in pairs:
            a.close()
            b.close()
