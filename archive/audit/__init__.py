"""The audit trail: who did what to which patient data, when, from where, and how it ended.

Events follow DICOM PS3.15 A.5 (audit message codes from CID 400). Recording is a deque append,
safe from any thread, so a response never waits for the database; a writer task copies the
queue into the append-only `audit_event` table in batches.
"""

from __future__ import annotations

import asyncio
import collections
import json
import logging
from dataclasses import dataclass, field
from datetime import datetime, timezone
from enum import Enum
from typing import Any

from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from archive.audit.throttle import UnauthenticatedThrottle

log = logging.getLogger("dicomflow.audit")

MAX_QUEUED = 200_000  # events; beyond this the database has been unreachable for a long time


class AuditAction(Enum):
    """(PS3.15 event code, display name, EventActionCode)"""

    STORE = (110104, "DICOM Instances Transferred", "C")
    QUERY = (110112, "Query", "E")
    RETRIEVE = (110104, "DICOM Instances Transferred", "R")  # sent out: C-GET, C-MOVE
    PROCEDURE_STEP = (110109, "Order Record", "U")  # MPPS: a modality reports a performed step
    READ = (110103, "DICOM Instances Accessed", "R")
    DELETE = (110105, "DICOM Study Deleted", "D")
    PATIENT_RECORD = (110110, "Patient Record", "U")  # a patient or study update, merge or new identifier
    REJECT = (110103, "DICOM Instances Accessed", "U")  # IOCM: a rejection note withdrew instances, or an admin restored them
    COMMIT = (110103, "DICOM Instances Accessed", "E")  # storage commitment checks what is held
    LOGIN = (110114, "User Authentication", "E")  # an association, or a token presented
    SECURITY_ALERT = (110113, "Security Alert", "E")  # refused: wrong tenant, missing role
    AUDIT_READ = (110101, "Audit Log Used", "R")

    @property
    def code(self) -> int:
        return self.value[0]


class Outcome(int, Enum):
    """EventOutcomeIndicator."""

    SUCCESS = 0
    MINOR_FAILURE = 4
    SERIOUS_FAILURE = 8
    MAJOR_FAILURE = 12


@dataclass
class AuditEvent:
    action: AuditAction
    outcome: Outcome
    subject: str  # token subject, "ae:CALLING_AE", or "anonymous"
    method: str  # oidc | ae | none
    source: str  # dicomweb | dimse
    peer: str | None = None
    tenant: str | None = None
    study_uid: str | None = None
    series_uid: str | None = None
    sop_uid: str | None = None
    detail: dict[str, Any] = field(default_factory=dict)
    occurred_at: datetime = field(default_factory=lambda: datetime.now(timezone.utc))

    def row(self) -> tuple[Any, ...]:
        code, name, action = self.action.value
        return (
            self.occurred_at,
            code,
            name,
            action,
            int(self.outcome),
            self.subject[:256],
            self.method,
            self.source,
            self.peer,
            self.tenant,
            self.study_uid,
            self.series_uid,
            self.sop_uid,
            json.dumps(self.detail, default=str),
        )


_COLUMNS = (
    "occurred_at",
    "event_code",
    "event_name",
    "action",
    "outcome",
    "subject",
    "method",
    "source",
    "peer",
    "tenant",
    "study_uid",
    "series_uid",
    "sop_uid",
    "detail",
)


class AuditLog:
    def __init__(self, pool: AsyncConnectionPool, interval: float = 0.5) -> None:
        self.pool = pool
        self.interval = interval
        self._queue: collections.deque[AuditEvent] = collections.deque()
        self._task: asyncio.Task[None] | None = None
        self._flush_lock = asyncio.Lock()
        self.unauthenticated = UnauthenticatedThrottle()
        self.dropped = 0  # events lost to a full queue since start: exported as a metric
        self._dropped_unreported = 0  # ... not yet written into the trail as a Security Alert

    def record(self, event: AuditEvent) -> None:
        """A queue push, from any thread; the writer task makes it durable within `interval`. A full
        queue (the index unreachable for long) counts what it cannot keep, and the trail gets one
        Security Alert saying how many once it can be written again."""
        if len(self._queue) >= MAX_QUEUED:
            self.dropped += 1
            self._dropped_unreported += 1
            if self.dropped == 1 or self.dropped % 10_000 == 0:
                log.error(
                    "audit queue full (%d events): the index is unreachable; %d events lost so far", MAX_QUEUED, self.dropped
                )
            return
        self._queue.append(event)

    def record_unauthenticated(self, event: AuditEvent) -> None:
        """A failed login: written in full up to a small rate per peer, counted past it."""
        if self.unauthenticated.admit(event.peer):
            self.record(event)

    def _summaries(self) -> list[AuditEvent]:
        """What was counted instead of written: suppressed failed logins per peer, lost events."""
        events = [
            AuditEvent(
                AuditAction.LOGIN,
                Outcome.MINOR_FAILURE,
                "unauthenticated",
                "oidc",
                "dicomweb",
                peer=peer,
                detail={"suppressed": count, "window_seconds": self.unauthenticated.window},
            )
            for peer, count in self.unauthenticated.summaries().items()
        ]
        if self._dropped_unreported and len(self._queue) < MAX_QUEUED // 2:
            lost, self._dropped_unreported = self._dropped_unreported, 0
            events.append(
                AuditEvent(
                    AuditAction.SECURITY_ALERT,
                    Outcome.SERIOUS_FAILURE,
                    "dicomflow",
                    "none",
                    "audit",
                    detail={"lost_events": lost, "reason": "audit queue full while the index was unreachable"},
                )
            )
        return events

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.flush()
            except Exception:  # noqa: BLE001 - events stay queued; try again next round
                log.warning("audit write failed; %d events wait", len(self._queue), exc_info=True)

    async def flush(self) -> int:
        async with self._flush_lock:
            self._queue.extend(self._summaries())
            batch: list[AuditEvent] = []
            while self._queue and len(batch) < 5000:
                batch.append(self._queue.popleft())
            if not batch:
                return 0
            try:
                async with self.pool.connection() as conn, conn.transaction():
                    async with conn.cursor().copy(f"COPY audit_event ({', '.join(_COLUMNS)}) FROM STDIN") as copy:
                        for event in batch:
                            await copy.write_row(event.row())
            except BaseException:
                self._queue.extendleft(reversed(batch))  # back in front, in order
                raise
            return len(batch)

    async def close(self) -> None:
        if self._task:
            self._task.cancel()
        try:
            while await self.flush():
                pass
        except Exception:  # noqa: BLE001 - shutting down; say what is lost
            log.error("audit: %d events could not be written at shutdown", len(self._queue))


async def record_now(pool: AsyncConnectionPool, event: AuditEvent) -> None:
    """One event written at once, for a step that runs where no AuditLog writer does (a workflow's
    activity): in the trail before the step reports done."""
    async with pool.connection() as conn:
        await record_in(conn, event)


async def record_in(conn: AsyncConnection, event: AuditEvent) -> None:
    """One event written in the caller's transaction: it stands exactly when what it records does."""
    placeholders = ", ".join(["%s"] * len(_COLUMNS))
    await conn.execute(f"INSERT INTO audit_event ({', '.join(_COLUMNS)}) VALUES ({placeholders})", event.row())


@dataclass
class AuditQuery:
    since: datetime | None = None
    until: datetime | None = None
    tenant: str | None = None
    subject: str | None = None
    study_uid: str | None = None
    limit: int = 100
    within: frozenset[str] | None = None  # only these tenants' events (an admin's own); None = all


async def search_audit(pool: AsyncConnectionPool, query: AuditQuery) -> list[dict[str, Any]]:
    where, params = ["true"], []
    for column, op, value in (
        ("occurred_at", ">=", query.since),
        ("occurred_at", "<", query.until),
        ("tenant", "=", query.tenant),
        ("subject", "=", query.subject),
        ("study_uid", "=", query.study_uid),
        ("tenant", "= ANY", None if query.within is None else sorted(query.within)),
    ):
        if value is not None:
            where.append(f"{column} {op}(%s)" if op == "= ANY" else f"{column} {op} %s")
            params.append(value)
    async with pool.connection() as conn:
        cursor = await conn.execute(
            f"SELECT id, {', '.join(_COLUMNS)} FROM audit_event WHERE {' AND '.join(where)}"
            " ORDER BY occurred_at DESC, id DESC LIMIT %s",
            [*params, query.limit],
        )
        names = [d.name for d in cursor.description or []]
        return [dict(zip(names, row)) for row in await cursor.fetchall()]


def as_json(row: dict[str, Any]) -> dict[str, Any]:
    return {k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in row.items()}


__all__ = ["AuditAction", "AuditEvent", "AuditLog", "AuditQuery", "Outcome", "as_json", "record_now", "search_audit"]
