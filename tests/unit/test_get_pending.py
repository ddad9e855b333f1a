"""Pending C-GET responses: the first, then one per interval; final responses always."""

from __future__ import annotations

from dimse.get_pending import PendingClock


def test_the_first_pending_goes_then_one_per_interval() -> None:
    clock = PendingClock(0.25)
    sent = [t for t in (0.0, 0.1, 0.2, 0.26, 0.3, 0.52) if clock.due(7, True, now=t)]
    assert sent == [0.0, 0.26, 0.52]


def test_final_responses_always_go_and_end_the_c_get() -> None:
    clock = PendingClock(0.25)
    assert clock.due(7, True, now=0.0)
    assert clock.due(7, False, now=0.01)
    assert clock.due(7, True, now=0.02), "a new C-GET under a reused message ID starts afresh"


def test_each_c_get_has_its_own_clock() -> None:
    clock = PendingClock(0.25)
    assert clock.due(1, True, now=0.0) and clock.due(2, True, now=0.01)
    assert not clock.due(1, True, now=0.02)
