"""Pending C-GET responses at most one per PENDING_INTERVAL for each C-GET.

pynetdicom answers every C-STORE sub-operation of a C-GET with a Pending C-GET response: a
message object and two encodings of its command set each time, ~13% of the SCP's time per
sub-operation (py-spy, the 520-instance series to getscu), and a queue hop that waits for the
socket between sub-operations. Pending responses are optional (PS3.4 C.4.3); like the C-MOVE relay,
this sends the first one, then one per interval with the counts of that moment. Final responses
(success, warning, failure, cancel) always go.
"""

from __future__ import annotations

import math
import time
from typing import Any

import pynetdicom.association
from pynetdicom.dimse_primitives import C_GET

from dimse.find_responses import FindResponseCache

PENDING = 0xFF00
PENDING_INTERVAL = 0.25  # seconds


class PendingClock:
    """Which Pending responses go: the first of each C-GET, then one per `interval`."""

    def __init__(self, interval: float = PENDING_INTERVAL) -> None:
        self.interval = interval
        self._last: dict[int, float] = {}  # by the C-GET's message ID, while it runs

    def due(self, message_id: int, pending: bool, now: float | None = None) -> bool:
        if not pending:  # a final response: always sent, and the C-GET is over
            self._last.pop(message_id, None)
            return True
        now = time.monotonic() if now is None else now
        if now - self._last.get(message_id, -math.inf) < self.interval:
            return False
        self._last[message_id] = now
        return True


class GetPendingThrottle(FindResponseCache):
    def __init__(self, assoc: Any) -> None:
        super().__init__(assoc)
        self._clock = PendingClock()

    def send_msg(self, primitive: Any, context_id: int) -> None:
        if isinstance(primitive, C_GET) and primitive.MessageIDBeingRespondedTo is not None:
            if not self._clock.due(primitive.MessageIDBeingRespondedTo, primitive.Status == PENDING):
                return
        super().send_msg(primitive, context_id)


def install() -> None:
    """Process-wide, after pynetdicom_find_responses.install(); for associations created from now on."""
    pynetdicom.association.DIMSEServiceProvider = GetPendingThrottle  # type: ignore[misc]
