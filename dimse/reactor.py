"""Shorter polls in pynetdicom's two reactor loops while messages flow, and waits that end when
what they poll for arrives.

pynetdicom moves every message through two polling threads per association: the DUL reactor
sleeps 1 ms whenever a loop found nothing to do, and the association reactor sleeps 1 ms on every
loop. A C-STORE waits on both in each direction, so about 1.5 ms of every sub-operation was sleep
(raw sends to storescp: 3.5-3.9 ms per 87 KB instance, 2.2-2.4 ms with shorter polls, same run).

While a sending association (one we requested: C-MOVE sub-operations, N-EVENT-REPORTs; or one
answering a C-GET, see `hurry`) was busy within the last `BUSY_WINDOW` seconds both loops poll
every `BUSY_POLL`; otherwise they keep pynetdicom's own 1 ms, and an association quiet for
`RESTING_AFTER` polls every `RESTING_POLL`. A receiving association's own thread always rests
(`association_poll`): the DUL's thread serves its C-STOREs (direct_receive) and everything else it
acts on wakes it. A receiving association's DUL is left alone: with several modalities sending at once the short polls cost more CPU than the latency
they save (C-STORE with 4 associations: 80-88 instances/s without them, 63-77 with, same run). pynetdicom has no setting for either poll: the DUL class is replaced
where `Association` looks it up, and the association reactor's `time.sleep` goes through
`_reactor_sleep`, which asks the calling thread (the Association itself) how recently it was busy.

Each reactor's sleep is a wait on what it polls for: the DUL's a select on its socket, the
association's a wait on its DIMSE message queue. A receiving association then takes each request
as it arrives instead of at the next poll (C-STORE on 1 association, 3 runs each: 143 -> 176
instances/s, SCP CPU 4.5 -> 4.1 ms per instance).
"""

from __future__ import annotations

import queue
import select
import socket
import threading
import time
import types
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import cast

import pynetdicom.association
import pynetdicom.dul
from pynetdicom.association import Association
from pynetdicom.dul import DULServiceProvider

from dimse.direct_receive import DirectReceive
from dimse.direct_store import SocketBusyError

IDLE_POLL = 0.001  # pynetdicom's own
BUSY_POLL = 0.00005
BUSY_WINDOW = 0.05
# an association quiet this long polls every RESTING_POLL: at 1 ms polls each open association cost
# ~40 ms of CPU a second doing nothing (4 idle associations: 4 -> 162 ms/s in the SCP process), and
# PACS and modalities keep associations open; the first PDU after a pause waits at most 20 ms
RESTING_AFTER = 0.5
RESTING_POLL = 0.02
# an association's first exchanges (negotiation, the first request, release of a short one) poll
# fast whichever side it is: an echo, a C-FIND or one C-STORE is over before pynetdicom's 1 ms polls
# would have moved its few PDUs (echoscu's association: 8 ms from connect to close, 3 ms at Orthanc)
EAGER_MOVES = 12
# Association.kill retries stopping the DUL every 10 ms from the caller's thread, and the DUL has
# almost always just queued the release's answer and not yet closed the socket: 10 ms lost per release
KILL_RETRY = 0.01
KILL_POLL = 0.0005
LENT_WAIT = 0.05  # how long the DUL thread blocks on a lent socket before it looks at its other work
LEND_TIMEOUT = 30.0  # a DUL stuck on the socket this long (a peer that stopped mid-PDU) fails the lend


class SocketUnavailable(ConnectionError):
    """The association has no open transport to lend."""


class SocketBusy(SocketBusyError):
    """Not lent now: the DUL has work of its own on the socket; send through it instead."""


class BusyAwareDUL(DULServiceProvider):
    """Remembers when it last moved a PDU either way; polls fast for a while after."""

    hurried = False
    lent = False
    moved = 0  # PDUs and primitives moved so far

    def __init__(self, *args: object, **kwargs: object) -> None:
        self.last_busy = time.monotonic()  # a new association is about to negotiate: poll as if busy
        # re-entrant: the DUL thread serves a C-STORE it read itself (direct_receive) while holding it,
        # and that request's answer borrows the socket (store_responses)
        self._socket_lock = threading.RLock()
        self._direct = DirectReceive(self)
        # select cannot see the queue of primitives to send: a byte on this pair wakes it for them.
        # Made when the thread starts: an associate() that fails before that would leak it.
        self._wake_reader: socket.socket | None = None
        self._wake_writer: socket.socket | None = None
        self._wake_lock = threading.Lock()  # a wake-up never races the close: its fd could be reused meanwhile
        self._woken_closed = False
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.to_user_queue = _NotifyingQueue(self)
        self.state_machine.do_action = self._locked_action(self.state_machine.do_action)  # type: ignore[method-assign,assignment]

    def run_reactor(self) -> None:
        with self._wake_lock:
            self._wake_reader, self._wake_writer = socket.socketpair()
            self._wake_reader.setblocking(False)
            self._wake_writer.setblocking(False)
        try:
            super().run_reactor()
        finally:
            self._direct.close()
            with self._wake_lock:
                self._woken_closed = True
                self._wake_reader.close()
                self._wake_writer.close()

    def send_pdu(self, primitive: object) -> None:
        super().send_pdu(primitive)  # type: ignore[arg-type]
        self.wake()

    def prepare_release(self) -> None:
        """Called before `Association.release()` (dimse.store_scu.release). After a long run of
        lent sends both pynetdicom threads poll every RESTING_POLL, and a release waits for the
        association's thread to pause, then for this thread to send the A-RELEASE-RQ: up to two
        resting polls (40 ms) per move. Both poll fast from now, and both end their current wait."""
        self.last_busy = time.monotonic()
        messages = self.assoc.dimse.msg_queue
        with messages.not_empty:
            messages.not_empty.notify_all()
        self.wake()

    def wake(self) -> None:
        """End the DUL thread's current wait now (a primitive to send, a release)."""
        with self._wake_lock:
            if self._woken_closed or self._wake_writer is None:  # stopped, or not started: nobody waits
                return
            try:
                self._wake_writer.send(b"\0")
            except OSError:  # already full of wake-ups
                pass

    @property  # type: ignore[override]
    def _run_loop_delay(self) -> float:
        return poll_interval(self)

    @_run_loop_delay.setter
    def _run_loop_delay(self, value: float) -> None:
        pass  # pynetdicom's __init__ assigns its fixed delay

    def _process_recv_primitive(self) -> bool:
        with self._holding() as held:
            return held and self._busy(super()._process_recv_primitive())

    def _read_pdu_data(self) -> None:
        """A receiving association's C-STORE is read and served here (dimse/direct_receive)."""
        if self._direct.takes_next_pdu():
            self._direct.read_pdu()
        else:
            super()._read_pdu_data()

    def _is_transport_event(self) -> bool:
        with self._holding() as held:
            return held and self._busy(super()._is_transport_event())

    @contextmanager
    def _holding(self) -> Iterator[bool]:
        """The DUL thread touches the socket only while it holds the lock (False: it is lent)."""
        held = self._socket_lock.acquire(timeout=LENT_WAIT)
        try:
            yield held
        finally:
            if held:
                self._socket_lock.release()

    @contextmanager
    def lend_socket(self, only_if_idle: bool = False, wait: float = 0.0) -> Iterator[socket.socket]:
        """The connected socket, for whole DIMSE messages written (and answers read) by the caller's
        thread (dimse/direct_store, C-FIND answers, C-STORE responses). The DUL neither reads
        nor writes it meanwhile (its reads and every state machine action, sends included, take the
        same lock); the state machine stays in Sta6, which P-DATA never leaves. Lent only when the
        DUL has no PDU of its own waiting to go, so fragments of two messages never interleave:
        SocketBusy after `wait` seconds of that. `only_if_idle`: nor anything from the peer waiting
        to be read, so a C-CANCEL is read between answers."""
        raw = self._take_idle(only_if_idle, time.monotonic() + wait)
        self.lent = True
        try:
            yield raw
        finally:
            self.lent = False
            self._idle_timer.restart()  # the peer did speak: its answers were read here
            self._socket_lock.release()

    def _take_idle(self, only_if_idle: bool, deadline: float) -> socket.socket:
        """The socket, with the lock held for the caller."""
        while True:
            if not self._socket_lock.acquire(timeout=LEND_TIMEOUT):
                raise SocketUnavailable(f"the DUL held the socket for {LEND_TIMEOUT:.0f} s")
            transport = self.socket
            raw = transport.socket if transport is not None else None
            if raw is None or not self.assoc.is_established:
                self._socket_lock.release()
                raise SocketUnavailable("the association has no open connection")
            if self.to_provider_queue.empty() and not (only_if_idle and transport.ready):  # type: ignore[union-attr]
                return raw
            self._socket_lock.release()
            if time.monotonic() >= deadline:
                raise SocketBusy("the DUL has a message to send or one to read")
            time.sleep(BUSY_POLL)

    def wait_for_peer(self, seconds: float) -> None:
        """The reactor's sleep between polls, cut short when the peer's next PDU arrives (a receiving
        association no longer waits up to a poll for each request) or a primitive is queued to go."""
        transport = self.socket
        raw = transport.socket if transport is not None else None
        woken = self._wake_reader
        if raw is None or woken is None or self.lent:
            time.sleep(seconds)
            return
        try:
            readable, _, _ = select.select([raw, woken], [], [], seconds)
            if woken in readable:
                woken.recv(4096)
        except (OSError, ValueError):  # closed meanwhile by another thread
            time.sleep(seconds)

    def _locked_action(self, action: Callable[[str], None]) -> Callable[[str], None]:
        def act(event: str) -> None:
            with self._socket_lock:  # actions send PDUs and close the socket: never while it is lent
                action(event)

        return act

    def _busy(self, moved: bool) -> bool:
        if moved:
            self.last_busy = time.monotonic()
            self.moved += 1
        return moved


class _NotifyingQueue(queue.Queue):  # type: ignore[type-arg]
    """The DUL's queue for the association's thread (the peer's A-RELEASE, A-ABORT): a put also
    ends that thread's wait on its DIMSE messages, which is all it waits on (`_wait_for_message`).
    Before, a peer's release of a rested association was answered after up to a resting poll (20 ms)."""

    def __init__(self, dul: BusyAwareDUL) -> None:
        super().__init__()
        self._dul = dul

    def put(self, item: object, block: bool = True, timeout: float | None = None) -> None:
        super().put(item, block, timeout)
        dimse = getattr(self._dul.assoc, "dimse", None)
        if dimse is not None:
            with dimse.msg_queue.not_empty:
                dimse.msg_queue.not_empty.notify_all()


def written_when_idle(dul: object, data: bytes) -> bool:
    """`data` (whole messages' PDUs) written to the socket now if the DUL lends it with nothing of
    its own to send or read; False: the caller sends through the DUL as pynetdicom does."""
    if not isinstance(dul, BusyAwareDUL):
        return False
    try:
        with dul.lend_socket(only_if_idle=True) as sock:
            sock.sendall(data)
            return True
    except (SocketBusy, SocketUnavailable):
        return False


def poll_interval(dul: BusyAwareDUL) -> float:
    if dul.lent:  # the borrower moves the PDUs; pynetdicom's threads have nothing to do
        return RESTING_POLL
    quiet = time.monotonic() - dul.last_busy
    if (dul.hurried or dul.assoc.is_requestor or dul.moved < EAGER_MOVES) and quiet < BUSY_WINDOW:
        return BUSY_POLL
    return IDLE_POLL if quiet < RESTING_AFTER else RESTING_POLL


def association_poll(dul: BusyAwareDUL) -> float:
    """A receiving association's own thread waits RESTING_POLL between looks: what it acts on wakes
    it (a request queued, the peer's release or abort: _NotifyingQueue), and its C-STOREs are
    served by the DUL's thread (direct_receive). Polled every millisecond while the DUL was busy,
    each of 4 associations' threads woke 1,000 times a second for nothing."""
    if not dul.assoc.is_requestor and not dul.hurried:
        return RESTING_POLL
    return poll_interval(dul)


def hurry(assoc: Association) -> None:
    """This association sends many objects from now on (a C-GET): poll it like a requested one."""
    if isinstance(assoc.dul, BusyAwareDUL):
        assoc.dul.hurried = True


def _reactor_sleep(seconds: float) -> None:
    """pynetdicom's polls, waiting on what they poll for: the DUL reactor wakes when the peer sends,
    the association's when the DUL queues a whole message; both still wake after the poll's interval."""
    thread = threading.current_thread()
    if isinstance(thread, BusyAwareDUL):
        thread.wait_for_peer(seconds)
        return
    dul = getattr(thread, "dul", None)
    if seconds == IDLE_POLL and isinstance(dul, BusyAwareDUL):
        _wait_for_message(cast(Association, thread), association_poll(dul))
        return
    time.sleep(KILL_POLL if seconds == KILL_RETRY else seconds)


def _wait_for_message(assoc: Association, seconds: float) -> None:
    messages = assoc.dimse.msg_queue
    with messages.not_empty:  # Queue.put notifies it
        if not messages.queue:
            messages.not_empty.wait(seconds)


def _reactor_clock() -> types.ModuleType:
    """The `time` module as pynetdicom's association and DUL modules see it, the reactors' sleep replaced."""
    clock = types.ModuleType("time")
    clock.__dict__.update({k: v for k, v in vars(time).items() if not k.startswith("__")})
    clock.sleep = _reactor_sleep  # type: ignore[attr-defined]
    return clock


def install() -> None:
    """Process-wide; for associations created from now on."""
    pynetdicom.association.DULServiceProvider = BusyAwareDUL  # type: ignore[misc]
    pynetdicom.association.time = _reactor_clock()  # type: ignore[attr-defined]
    pynetdicom.dul.time = _reactor_clock()  # type: ignore[attr-defined]
