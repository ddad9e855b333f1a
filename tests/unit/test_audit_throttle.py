"""Failed logins past a small rate per peer are counted, not written one by one, and the count is
written when the window ends (issue 27 item 7)."""

from archive.audit import AuditAction, AuditEvent, AuditLog, Outcome
from archive.audit.throttle import UnauthenticatedThrottle


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_flood_from_one_peer_is_counted_and_others_pass() -> None:
    clock = Clock()
    throttle = UnauthenticatedThrottle(burst=3, window=10, clock=clock)
    admitted = [throttle.admit("10.0.0.9") for _ in range(1000)]
    assert admitted.count(True) == 3
    assert throttle.admit("10.0.0.10"), "another peer has its own budget"
    assert throttle.summaries() == {}, "the window has not ended"
    clock.now += 10
    assert throttle.summaries() == {"10.0.0.9": 997}
    assert throttle.admit("10.0.0.9"), "a new window"


def _failed_login(peer: str) -> AuditEvent:
    return AuditEvent(AuditAction.LOGIN, Outcome.MINOR_FAILURE, "unauthenticated", "oidc", "dicomweb", peer=peer)


def test_the_audit_log_keeps_a_summary_of_what_it_did_not_write() -> None:
    log = AuditLog(pool=None, interval=0.5)  # type: ignore[arg-type] - nothing is flushed here
    clock = Clock()
    log.unauthenticated = UnauthenticatedThrottle(burst=2, window=10, clock=clock)
    for _ in range(50_000):
        log.record_unauthenticated(_failed_login("10.0.0.9"))
    assert len(log._queue) == 2
    clock.now += 11
    summary = log._summaries()
    assert [(e.peer, e.detail["suppressed"]) for e in summary] == [("10.0.0.9", 49_998)]


def test_a_full_queue_is_reported_in_the_trail_not_only_in_a_log() -> None:
    import archive.audit as audit

    log = AuditLog(pool=None)  # type: ignore[arg-type]
    saved = audit.MAX_QUEUED
    audit.MAX_QUEUED = 4
    try:
        for _ in range(10):
            log.record(_failed_login("10.0.0.1"))
        assert log.dropped == 6
        log._queue.clear()  # the index is back and the queue drained
        alerts = [e for e in log._summaries() if e.action is AuditAction.SECURITY_ALERT]
        assert len(alerts) == 1 and alerts[0].detail["lost_events"] == 6
        assert not [e for e in log._summaries() if e.action is AuditAction.SECURITY_ALERT], "reported once"
    finally:
        audit.MAX_QUEUED = saved
