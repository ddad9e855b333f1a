"""How often pynetdicom's reactors poll an association, from how recently it moved a PDU, and that
their waits end when what they poll for arrives."""

from __future__ import annotations

import queue
import socket
import threading
import time
from collections.abc import Callable
from types import SimpleNamespace

import pytest

from dimse.reactor import (
    BUSY_POLL,
    EAGER_MOVES,
    IDLE_POLL,
    RESTING_AFTER,
    RESTING_POLL,
    BusyAwareDUL,
    _NotifyingQueue,
    _wait_for_message,
    association_poll,
    poll_interval,
)


def _dul(
    quiet: float, requestor: bool = False, hurried: bool = False, lent: bool = False, moved: int = EAGER_MOVES
) -> SimpleNamespace:
    return SimpleNamespace(
        last_busy=time.monotonic() - quiet, hurried=hurried, lent=lent, moved=moved, assoc=SimpleNamespace(is_requestor=requestor)
    )


def test_a_sending_association_polls_fast_while_busy() -> None:
    assert poll_interval(_dul(0.0, requestor=True)) == BUSY_POLL  # type: ignore[arg-type]
    assert poll_interval(_dul(0.0, hurried=True)) == BUSY_POLL  # type: ignore[arg-type]


def test_a_receiving_association_keeps_pynetdicoms_poll_while_it_moves_pdus() -> None:
    assert poll_interval(_dul(0.0)) == IDLE_POLL  # type: ignore[arg-type]
    assert poll_interval(_dul(RESTING_AFTER / 2, requestor=True)) == IDLE_POLL  # type: ignore[arg-type]


def test_a_quiet_association_rests() -> None:
    for requestor in (False, True):
        assert poll_interval(_dul(RESTING_AFTER + 1, requestor=requestor)) == RESTING_POLL  # type: ignore[arg-type]
    assert RESTING_POLL > IDLE_POLL


def test_a_receiving_associations_own_thread_rests_while_its_dul_serves_the_stores() -> None:
    """Its wake-ups come from what it waits for (the tests below); a requested association's thread,
    and one answering a C-GET, keep the DUL's pace."""
    assert association_poll(_dul(0.0, moved=0)) == RESTING_POLL  # type: ignore[arg-type]
    assert association_poll(_dul(0.0)) == RESTING_POLL  # type: ignore[arg-type]
    assert association_poll(_dul(0.0, requestor=True)) == BUSY_POLL  # type: ignore[arg-type]
    assert association_poll(_dul(0.0, hurried=True)) == BUSY_POLL  # type: ignore[arg-type]


def test_an_association_whose_socket_is_lent_rests() -> None:
    """dimse/direct_store moves the PDUs meanwhile: pynetdicom's threads have nothing to do."""
    assert poll_interval(_dul(0.0, requestor=True, hurried=True, lent=True)) == RESTING_POLL  # type: ignore[arg-type]


def test_a_new_receiving_association_polls_fast_for_its_first_exchanges() -> None:
    """Negotiation, one request, release: an echo or a C-FIND is not kept waiting on 1 ms polls."""
    assert poll_interval(_dul(0.0, moved=0)) == BUSY_POLL  # type: ignore[arg-type]
    assert poll_interval(_dul(0.0, moved=EAGER_MOVES - 1)) == BUSY_POLL  # type: ignore[arg-type]
    assert poll_interval(_dul(0.0, moved=EAGER_MOVES)) == IDLE_POLL  # type: ignore[arg-type]
    assert poll_interval(_dul(RESTING_AFTER + 1, moved=0)) == RESTING_POLL  # type: ignore[arg-type]


def _returns_when(wait: Callable[[], None], wake: Callable[[], None]) -> bool:
    """Runs `wait` (an interval of a minute) on a thread, then `wake`: did the wait end well before
    its interval? Without the wake-up it would sit out the minute."""
    waiter = threading.Thread(target=wait, daemon=True)
    waiter.start()
    time.sleep(0.05)
    wake()
    waiter.join(timeout=20)
    return not waiter.is_alive()


def _waiting_dul(ours: socket.socket) -> SimpleNamespace:
    """What BusyAwareDUL.wait_for_peer and .wake use of a DUL, with real sockets."""
    reader, writer = socket.socketpair()
    reader.setblocking(False)
    return SimpleNamespace(
        socket=SimpleNamespace(socket=ours),
        lent=False,
        _wake_reader=reader,
        _wake_writer=writer,
        _wake_lock=threading.Lock(),
        _woken_closed=False,
    )


def _waits_until(dul: SimpleNamespace, wake: Callable[[], None]) -> bool:
    ended: list[bool] = []

    def wait() -> None:
        BusyAwareDUL.wait_for_peer(dul, 60.0)  # type: ignore[arg-type]
        ended.append(True)  # not an exception that ended the thread

    return _returns_when(wait, wake) and ended == [True]


def test_the_dul_reactor_wakes_when_the_peer_sends() -> None:
    ours, peer = socket.socketpair()
    with ours, peer:
        assert _waits_until(_waiting_dul(ours), lambda: peer.sendall(b"\x04"))


def test_the_dul_reactor_wakes_when_a_primitive_is_queued_to_send() -> None:
    """send_pdu (an A-RELEASE-RQ, a C-STORE response) and prepare_release wake it: select cannot see
    the DUL's queue, so the primitive used to wait for the poll (up to RESTING_POLL)."""
    ours, peer = socket.socketpair()
    with ours, peer:
        dul = _waiting_dul(ours)
        assert _waits_until(dul, lambda: BusyAwareDUL.wake(dul))  # type: ignore[arg-type]
        with pytest.raises(BlockingIOError):  # the wake-up was drained: the next wait waits again
            dul._wake_reader.recv(1)
        dul._woken_closed = True  # as run_reactor leaves it, under the same lock as wake
        dul._wake_writer.close()
        BusyAwareDUL.wake(dul)  # type: ignore[arg-type]  # a DUL that has stopped: quietly nothing


def test_the_association_reactor_wakes_when_a_message_is_queued() -> None:
    messages: queue.Queue[object] = queue.Queue()
    assoc = SimpleNamespace(dimse=SimpleNamespace(msg_queue=messages))
    assert _returns_when(lambda: _wait_for_message(assoc, 60.0), lambda: messages.put((1, object())))  # type: ignore[arg-type]


def test_the_association_reactor_wakes_when_the_peer_releases_or_aborts() -> None:
    """The peer's A-RELEASE-RQ (or A-ABORT) reaches the association's thread through the DUL's
    to-user queue, not the DIMSE one it waits on: a rested association answered a release only
    after its poll (up to RESTING_POLL; a second review measured 9 ms median, 20 ms worst)."""
    messages: queue.Queue[object] = queue.Queue()
    assoc = SimpleNamespace(dimse=SimpleNamespace(msg_queue=messages))
    to_user = _NotifyingQueue(SimpleNamespace(assoc=assoc))  # type: ignore[arg-type]
    assert _returns_when(lambda: _wait_for_message(assoc, 60.0), lambda: to_user.put(object()))  # type: ignore[arg-type]
    assert to_user.qsize() == 1 and messages.empty()  # delivered where pynetdicom reads it, nothing else


def test_an_association_that_never_starts_leaves_no_wake_sockets() -> None:
    """pynetdicom builds the DUL before it checks associate()'s arguments: the wake pair is made when
    the DUL's thread starts, so a refused call leaves nothing open, and waking it is a no-op."""
    from pynetdicom import AE

    import dimse

    dimse.install()
    ae = AE(ae_title="LEAKCHECK")
    ae.add_requested_context("1.2.840.10008.1.1")
    made = []
    original = BusyAwareDUL.__init__

    def remember(self: BusyAwareDUL, *args: object, **kwargs: object) -> None:
        original(self, *args, **kwargs)
        made.append(self)

    BusyAwareDUL.__init__ = remember  # type: ignore[method-assign]
    try:
        with pytest.raises(ValueError):
            ae.associate("127.0.0.1", 1, ae_title="")  # an empty called AE title: refused before connecting
    finally:
        BusyAwareDUL.__init__ = original  # type: ignore[method-assign]
    assert made and made[0]._wake_reader is None and made[0]._wake_writer is None
    made[0].wake()  # not started: quietly nothing
