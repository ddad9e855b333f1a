"""The progress of a migration from a legacy archive, as rows (index migration 23): the days its
C-FIND searched and each study found, found -> moved -> verified (or failed). Every step reads and
writes these rows, so a migration stopped or crashed anywhere resumes where it was, and a study
verified once is never pulled again."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from psycopg_pool import AsyncConnectionPool

from archive.index.instance_state import served

PENDING = ("found", "moved")  # listed by C-FIND, not verified yet: what a (resumed) migration moves


@dataclass(frozen=True)
class FoundStudy:
    study_uid: str
    expected: int | None  # the source's instance count, when it said it


@dataclass(frozen=True)
class MigrationSummary:
    key: str
    tenant: str
    source_ae: str
    since: str
    until: str
    state: str
    days: int  # days searched
    capped_days: int
    found: int
    moved: int  # the C-MOVE ended (verified ones included)
    verified: int
    failed: int
    instances: int  # verified instances
    started_at: datetime
    first_moved: datetime | None
    last_verified: datetime | None

    @property
    def studies_per_second(self) -> float:
        if self.first_moved is None or self.last_verified is None or self.last_verified <= self.first_moved:
            return 0.0
        return self.verified / (self.last_verified - self.first_moved).total_seconds()

    @property
    def instances_per_second(self) -> float:
        if not self.verified:
            return 0.0
        return self.studies_per_second * self.instances / self.verified


async def begin(
    pool: AsyncConnectionPool, key: str, tenant: str, source_ae: str, since: str, until: str, modalities: list[str]
) -> int:
    """Record the migration (or take it up again); studies that failed before are tried again.
    How many studies it had verified already."""
    async with pool.connection() as conn:
        await conn.execute(
            """INSERT INTO migration (key, tenant, source_ae, since, until, modalities) VALUES (%s, %s, %s, %s, %s, %s)
               ON CONFLICT (key) DO UPDATE SET state = 'running', updated_at = now()""",
            (key, tenant, source_ae, since, until, modalities),
        )
        await conn.execute("UPDATE migration_study SET state = 'found' WHERE key = %s AND state = 'failed'", (key,))
        row = await (
            await conn.execute("SELECT count(*) FROM migration_study WHERE key = %s AND state = 'verified'", (key,))
        ).fetchone()
    return row[0] if row else 0


async def day_searched(pool: AsyncConnectionPool, key: str, day: str) -> tuple[int, bool] | None:
    """(found, capped) of a day the migration searched already; None when it has not."""
    async with pool.connection() as conn:
        row = await (
            await conn.execute("SELECT found, capped FROM migration_day WHERE key = %s AND day = %s", (key, day))
        ).fetchone()
    return (row[0], row[1]) if row else None


async def record_day(pool: AsyncConnectionPool, key: str, day: str, studies: list[FoundStudy], capped: bool) -> None:
    """A day's C-FIND answer, in one transaction: a study found before keeps its state."""
    async with pool.connection() as conn, conn.transaction():
        async with conn.cursor() as cur:
            await cur.executemany(
                """INSERT INTO migration_study (key, study_uid, day, expected) VALUES (%s, %s, %s, %s)
                   ON CONFLICT (key, study_uid) DO UPDATE SET expected = coalesce(EXCLUDED.expected, migration_study.expected)""",
                [(key, s.study_uid, day, s.expected) for s in studies],
            )
        await conn.execute(
            """INSERT INTO migration_day (key, day, found, capped) VALUES (%s, %s, %s, %s)
               ON CONFLICT (key, day) DO UPDATE SET found = EXCLUDED.found, capped = EXCLUDED.capped, searched_at = now()""",
            (key, day, len(studies), capped),
        )


async def pending(pool: AsyncConnectionPool, key: str, day: str, limit: int) -> list[FoundStudy]:
    async with pool.connection() as conn:
        rows = await (
            await conn.execute(
                """SELECT study_uid, expected FROM migration_study
                   WHERE key = %s AND day = %s AND state IN ('found', 'moved') ORDER BY study_uid LIMIT %s""",
                (key, day, limit),
            )
        ).fetchall()
    return [FoundStudy(r[0], r[1]) for r in rows]


async def study_state(pool: AsyncConnectionPool, key: str, study_uid: str) -> tuple[str, int] | None:
    """(state, received) of a study of the migration."""
    async with pool.connection() as conn:
        row = await (
            await conn.execute("SELECT state, received FROM migration_study WHERE key = %s AND study_uid = %s", (key, study_uid))
        ).fetchone()
    return (row[0], row[1]) if row else None


async def held_instances(pool: AsyncConnectionPool, tenant: str, study_uid: str) -> int:
    """The study's instances this archive holds and serves."""
    async with pool.connection() as conn:
        row = await (
            await conn.execute(
                f"SELECT count(*) FROM instance WHERE tenant = %s AND study_uid = %s AND {served()}", (tenant, study_uid)
            )
        ).fetchone()
    return row[0] if row else 0


async def mark_moving(pool: AsyncConnectionPool, key: str, study_uid: str, expected: int | None) -> None:
    """A C-MOVE is about to be sent (counted, so a test or an operator sees a study pulled twice)."""
    async with pool.connection() as conn:
        await conn.execute(
            """UPDATE migration_study SET moves = moves + 1, expected = coalesce(%s, expected)
               WHERE key = %s AND study_uid = %s""",
            (expected, key, study_uid),
        )


async def mark_moved(pool: AsyncConnectionPool, key: str, study_uid: str, received: int, detail: str) -> None:
    async with pool.connection() as conn:
        await conn.execute(
            """UPDATE migration_study SET state = 'moved', received = %s, detail = %s, moved_at = now()
               WHERE key = %s AND study_uid = %s AND state <> 'verified'""",
            (received, detail, key, study_uid),
        )


async def mark_verified(pool: AsyncConnectionPool, key: str, study_uid: str, received: int, detail: str) -> None:
    async with pool.connection() as conn:
        await conn.execute(
            """UPDATE migration_study SET state = 'verified', received = %s, detail = %s,
                      moved_at = coalesce(moved_at, now()), verified_at = now()
               WHERE key = %s AND study_uid = %s""",
            (received, detail, key, study_uid),
        )


async def mark_failed(pool: AsyncConnectionPool, key: str, study_uid: str, reason: str) -> None:
    async with pool.connection() as conn:
        await conn.execute(
            "UPDATE migration_study SET state = 'failed', detail = %s WHERE key = %s AND study_uid = %s AND state <> 'verified'",
            (reason[:1000], key, study_uid),
        )


async def finish(pool: AsyncConnectionPool, key: str) -> str:
    """The migration's end state: done, or done with failures (a re-run tries those again)."""
    async with pool.connection() as conn:
        row = await (
            await conn.execute(
                """UPDATE migration SET updated_at = now(), state = CASE WHEN EXISTS (
                       SELECT 1 FROM migration_study WHERE key = %(key)s AND state <> 'verified')
                       THEN 'done with failures' ELSE 'done' END
                   WHERE key = %(key)s RETURNING state""",
                {"key": key},
            )
        ).fetchone()
    return row[0] if row else "unknown"


async def set_state(pool: AsyncConnectionPool, key: str, state: str) -> None:
    async with pool.connection() as conn:
        await conn.execute("UPDATE migration SET state = %s, updated_at = now() WHERE key = %s", (state, key))


_SUMMARY = """
SELECT m.key, m.tenant, m.source_ae, m.since, m.until, m.state,
       (SELECT count(*) FROM migration_day d WHERE d.key = m.key),
       (SELECT count(*) FROM migration_day d WHERE d.key = m.key AND d.capped),
       count(s.study_uid),
       count(s.study_uid) FILTER (WHERE s.state IN ('moved', 'verified')),
       count(s.study_uid) FILTER (WHERE s.state = 'verified'),
       count(s.study_uid) FILTER (WHERE s.state = 'failed'),
       coalesce(sum(s.received) FILTER (WHERE s.state = 'verified'), 0),
       m.started_at, min(s.moved_at), max(s.verified_at)
FROM migration m LEFT JOIN migration_study s ON s.key = m.key
WHERE %(key)s::text IS NULL OR m.key = %(key)s
GROUP BY m.key ORDER BY m.started_at
"""


async def summaries(pool: AsyncConnectionPool, key: str | None = None) -> list[MigrationSummary]:
    async with pool.connection() as conn:
        rows = await (await conn.execute(_SUMMARY, {"key": key})).fetchall()
    return [MigrationSummary(*row) for row in rows]


async def failures(pool: AsyncConnectionPool, key: str, limit: int = 20) -> list[tuple[str, str]]:
    """(study, reason) of failed studies, for the status report."""
    async with pool.connection() as conn:
        rows = await (
            await conn.execute(
                "SELECT study_uid, coalesce(detail, '') FROM migration_study WHERE key = %s AND state = 'failed' "
                "ORDER BY study_uid LIMIT %s",
                (key, limit),
            )
        ).fetchall()
    return [(r[0], r[1]) for r in rows]


async def capped_days(pool: AsyncConnectionPool, key: str) -> list[str]:
    async with pool.connection() as conn:
        rows = await (
            await conn.execute("SELECT day FROM migration_day WHERE key = %s AND capped ORDER BY day", (key,))
        ).fetchall()
    return [r[0] for r in rows]
