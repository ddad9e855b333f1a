"""Unauthenticated failures, counted instead of written one by one past a small rate.

A client without a valid token costs nothing to send, and every 401 used to become a row in the
audit trail: a flood of them could fill the audit queue and push out the events that matter. Per
peer, the first `burst` failures of each window are written as they are; the rest are counted and
written as one summary event per peer and window, so the trail still says how many there were.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

BURST = 20  # failures per peer and window written in full
WINDOW_SECONDS = 10.0
MAX_PEERS = 10_000  # distinct peers tracked at once; beyond it, unknown peers share one entry


@dataclass
class _Window:
    started: float
    written: int = 0
    suppressed: int = 0


@dataclass
class UnauthenticatedThrottle:
    burst: int = BURST
    window: float = WINDOW_SECONDS
    clock: Callable[[], float] = time.monotonic
    _peers: dict[str, _Window] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def admit(self, peer: str | None) -> bool:
        """Whether this failure is written in full; False counts it into the peer's summary."""
        key = self._key(peer)
        now = self.clock()
        with self._lock:
            entry = self._peers.get(key)
            if entry is None or now - entry.started >= self.window and entry.suppressed == 0:
                entry = self._peers[key] = _Window(now)
            if entry.written < self.burst:
                entry.written += 1
                return True
            entry.suppressed += 1
            return False

    def summaries(self) -> dict[str, int]:
        """Peers whose window has ended with failures counted, and how many; their counts restart."""
        now = self.clock()
        ended: dict[str, int] = {}
        with self._lock:
            for key, entry in list(self._peers.items()):
                if now - entry.started < self.window:
                    continue
                if entry.suppressed:
                    ended[key] = entry.suppressed
                del self._peers[key]
        return ended

    def _key(self, peer: str | None) -> str:
        key = peer or "unknown"
        if key not in self._peers and len(self._peers) >= MAX_PEERS:
            return "many-peers"
        return key
