"""Retrieves (C-MOVE): the instances each must send, in order, and what became of each.

The list is fixed when the retrieve is accepted, so the counts the requester sees add up, and a
retrieve resumed after a crash sends only what the destination has not yet acknowledged.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from psycopg import Connection
from psycopg_pool import AsyncConnectionPool, ConnectionPool

from archive.index.instance_state import served

PENDING, COMPLETED, WARNING, FAILED = "pending", "completed", "warning", "failed"
RUNNING, DONE, CANCELLED = "running", "done", "cancelled"


class TooManyInstances(ValueError):
    pass


@dataclass
class Progress:
    state: str
    finished: bool = False  # the counts are final
    remaining: int = 0
    completed: int = 0
    warning: int = 0
    failed: int = 0
    failed_uids: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class ItemToSend:
    position: int
    sop_uid: str
    sop_class_uid: str | None  # None: the instance was deleted since the retrieve was accepted
    transfer_syntax: str | None
    blob_key: str | None


async def create(
    pool: AsyncConnectionPool,
    retrieve_id: str,
    tenant: str,
    requested_by: str,
    destination: str,
    instances_sql: str,
    params: list[Any],
    max_instances: int,
    keep_empty: bool = True,
) -> int:
    """Record the retrieve and its instances (from `instances_sql`, a SELECT of SOP Instance UIDs); their number.
    Without `keep_empty`, a SELECT that finds nothing leaves nothing recorded (a forward with nothing owed)."""
    async with pool.connection() as conn, conn.transaction():
        await conn.execute(
            "INSERT INTO retrieve (id, tenant, requested_by, destination, total) VALUES (%s, %s, %s, %s, 0)",
            (retrieve_id, tenant, requested_by, destination),
        )
        cursor = await conn.execute(
            "INSERT INTO retrieve_item (retrieve_id, position, sop_uid)"
            f" SELECT %s, row_number() OVER (), m.sop_uid FROM ({instances_sql}) AS m",
            [retrieve_id, *params],
        )
        total = cursor.rowcount
        if total > max_instances:
            raise TooManyInstances(f"{total} instances match; one retrieve can send at most {max_instances}")
        if not total and not keep_empty:
            await conn.execute("DELETE FROM retrieve WHERE id = %s", (retrieve_id,))
            return 0
        await conn.execute("UPDATE retrieve SET total = %s WHERE id = %s", (total, retrieve_id))
    return total


async def record_outcomes(pool: AsyncConnectionPool, retrieve_id: str, outcomes: list[tuple[int, str, int | None]]) -> None:
    """(position, state, status) of sent items, at once: a batch sent in one request (STOW-RS)."""
    async with pool.connection() as conn, conn.transaction():
        async with conn.cursor() as cursor:
            await cursor.executemany(
                "UPDATE retrieve_item SET state = %s, status = %s WHERE retrieve_id = %s AND position = %s",
                [(state, status, retrieve_id, position) for position, state, status in outcomes],
            )


async def recorded_as(pool: AsyncConnectionPool, retrieve_id: str) -> tuple[str, str] | None:
    """The tenant and destination the SCP recorded for this retrieve; None when it recorded none."""
    async with pool.connection() as conn:
        row = await (await conn.execute("SELECT tenant, destination FROM retrieve WHERE id = %s", (retrieve_id,))).fetchone()
    return (str(row[0]), str(row[1])) if row else None


async def progress(pool: AsyncConnectionPool, retrieve_id: str, with_failed_uids: bool = False) -> Progress:
    async with pool.connection() as conn:
        row = await (
            await conn.execute("SELECT state, finished_at IS NOT NULL FROM retrieve WHERE id = %s", (retrieve_id,))
        ).fetchone()
        if row is None:
            raise KeyError(retrieve_id)
        counts: dict[str, int] = dict(
            await (
                await conn.execute(
                    "SELECT state, count(*) FROM retrieve_item WHERE retrieve_id = %s GROUP BY state", (retrieve_id,)
                )
            ).fetchall()
        )
        failed_uids = []
        if with_failed_uids and counts.get(FAILED):
            failed_uids = [
                r[0]
                for r in await (
                    await conn.execute(
                        "SELECT sop_uid FROM retrieve_item WHERE retrieve_id = %s AND state = 'failed' ORDER BY position",
                        (retrieve_id,),
                    )
                ).fetchall()
            ]
    return Progress(
        row[0],
        row[1],
        counts.get(PENDING, 0),
        counts.get(COMPLETED, 0),
        counts.get(WARNING, 0),
        counts.get(FAILED, 0),
        failed_uids,
    )


async def pending(pool: AsyncConnectionPool, retrieve_id: str, limit: int) -> list[ItemToSend]:
    """The next instances still owed, with what is needed to send them; none once the retrieve is
    not running any more (the requester cancelled it)."""
    async with pool.connection() as conn:
        rows = await (
            await conn.execute(
                "SELECT ri.position, ri.sop_uid, i.sop_class_uid, i.transfer_syntax, i.blob_key"
                " FROM retrieve_item ri JOIN retrieve r ON r.id = ri.retrieve_id"
                f" LEFT JOIN instance i ON i.tenant = r.tenant AND i.sop_uid = ri.sop_uid AND {served('i')}"
                " WHERE ri.retrieve_id = %s AND ri.state = 'pending' AND r.state = 'running' ORDER BY ri.position LIMIT %s",
                (retrieve_id, limit),
            )
        ).fetchall()
    return [ItemToSend(*row) for row in rows]


def _acknowledging(conn: Connection) -> None:
    conn.autocommit = True
    conn.execute("SET synchronous_commit TO off")


def open_acknowledgement_pool(dsn: str, max_size: int = 8) -> ConnectionPool:
    """Synchronous connections for Acknowledgements, kept open between retrieves: a new connection
    (authentication included) took ~7 ms at the start of every move. Each is checked before use."""
    pool = ConnectionPool(
        dsn,
        min_size=1,
        max_size=max_size,
        configure=_acknowledging,
        open=False,
        check=ConnectionPool.check_connection,
        kwargs={"connect_timeout": 30},
    )
    pool.open(wait=True, timeout=30)
    return pool


class Acknowledgements:
    """What the destination answered, one instance at a time, each written before the next is sent.

    A connection of its own for the whole attempt, used by the thread that sends (no hop to an
    event loop per instance), committing without waiting for the WAL flush: the row is in
    PostgreSQL when `record` returns, so a killed worker resumes after it; only a crash of
    PostgreSQL itself can forget the last fraction of a second of answers, and those instances are
    then sent again, which a storage SCP takes as a duplicate. (With a flush per instance, and a
    transaction around it, the writes took as long as the sends.)"""

    def __init__(self, pool: ConnectionPool, conn: Connection) -> None:
        self.pool = pool
        self.conn = conn

    @classmethod
    def borrow(cls, pool: ConnectionPool) -> Acknowledgements:
        return cls(pool, pool.getconn(timeout=30))

    def close(self) -> None:
        self.pool.putconn(self.conn)

    def record(self, retrieve_id: str, position: int, state: str, status: int | None) -> None:
        self.conn.execute(
            "UPDATE retrieve_item SET state = %s, status = %s WHERE retrieve_id = %s AND position = %s",
            (state, status, retrieve_id, position),
        )


async def fail_pending(pool: AsyncConnectionPool, retrieve_id: str, status: int) -> None:
    """Give up on what is still owed (the destination stays unreachable)."""
    async with pool.connection() as conn:
        await conn.execute(
            "UPDATE retrieve_item SET state = 'failed', status = %s WHERE retrieve_id = %s AND state = 'pending'",
            (status, retrieve_id),
        )


async def cancel(pool: AsyncConnectionPool, retrieve_id: str) -> None:
    """The requester sent C-CANCEL: the sender stops before its next instance."""
    async with pool.connection() as conn:
        await conn.execute("UPDATE retrieve SET state = 'cancelled' WHERE id = %s AND state = 'running'", (retrieve_id,))


async def finish(pool: AsyncConnectionPool, retrieve_id: str) -> None:
    """The sender is done (or was cancelled): the counts are final."""
    async with pool.connection() as conn:
        await conn.execute(
            "UPDATE retrieve SET state = CASE WHEN state = 'running' THEN 'done' ELSE state END,"
            " finished_at = now() WHERE id = %s AND finished_at IS NULL",
            (retrieve_id,),
        )


async def pending_kinds(pool: AsyncConnectionPool, retrieve_id: str) -> list[tuple[str, str]]:
    """The (SOP Class UID, stored transfer syntax) pairs among what is still owed: the contexts to propose."""
    async with pool.connection() as conn:
        rows = await (
            await conn.execute(
                "SELECT DISTINCT i.sop_class_uid, i.transfer_syntax FROM retrieve_item ri JOIN retrieve r ON r.id = ri.retrieve_id"
                " JOIN instance i ON i.tenant = r.tenant AND i.sop_uid = ri.sop_uid"
                " WHERE ri.retrieve_id = %s AND ri.state = 'pending'",
                (retrieve_id,),
            )
        ).fetchall()
    return [(r[0], r[1]) for r in rows]


async def prune(pool: AsyncConnectionPool, older_than_days: float) -> int:
    """Forget retrieves finished longer ago than this (their per-instance rows go with them)."""
    async with pool.connection() as conn:
        cursor = await conn.execute(
            "DELETE FROM retrieve WHERE finished_at < now() - make_interval(secs => %s)", (older_than_days * 86400,)
        )
        return cursor.rowcount


async def withdraw(pool: AsyncConnectionPool, retrieve_id: str) -> None:
    """A forward cancelled by an administrator: the retrieve ends cancelled and forgets what it had
    not sent yet, so nothing counts as owed by it and a later forward of the rule lists those again."""
    async with pool.connection() as conn, conn.transaction():
        await conn.execute(
            "UPDATE retrieve SET state = 'cancelled', finished_at = coalesce(finished_at, now()) WHERE id = %s", (retrieve_id,)
        )
        await conn.execute("DELETE FROM retrieve_item WHERE retrieve_id = %s AND state = 'pending'", (retrieve_id,))
