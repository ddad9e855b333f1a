"""Deleting a study, series or instance from the index; the caller then removes the blobs."""

from __future__ import annotations

from dataclasses import dataclass, field

from psycopg_pool import AsyncConnectionPool

from archive.index.scope import instance_scope


@dataclass
class Deleted:
    instances: int = 0
    blob_keys: list[str] = field(default_factory=list)


async def delete_objects(pool: AsyncConnectionPool, tenant: str, study_uid: str, series_uid: str | None = None,
                         sop_uid: str | None = None) -> Deleted:
    """Rows go first and in one transaction: a crash after it leaves orphan blobs, never rows without blobs."""
    where, params = instance_scope(tenant, study_uid, series_uid, sop_uid)
    out = Deleted()
    async with pool.connection() as conn, conn.transaction():
        rows = await (await conn.execute(
            f"DELETE FROM instance WHERE {where} RETURNING blob_key, transcoded_key", params
        )).fetchall()
        out.instances = len(rows)
        out.blob_keys = [k for row in rows for k in row if k]
        emptied = await (await conn.execute(
            """DELETE FROM series se WHERE se.tenant = %s AND se.study_uid = %s
                 AND NOT EXISTS (SELECT 1 FROM instance i WHERE i.tenant = se.tenant AND i.series_uid = se.series_uid)
               RETURNING metadata_key""", (tenant, study_uid),
        )).fetchall()
        out.blob_keys += [r[0] for r in emptied if r[0]]
        await conn.execute(
            """DELETE FROM study st WHERE st.tenant = %s AND st.study_uid = %s
                 AND NOT EXISTS (SELECT 1 FROM series se WHERE se.tenant = st.tenant AND se.study_uid = st.study_uid)""",
            (tenant, study_uid),
        )
        if out.instances:  # same transaction: the deletion and the note that its workflow must hear of it
            await conn.execute(
                """INSERT INTO deletion_outbox (tenant, study_uid, instances) VALUES (%s, %s, %s)
                   ON CONFLICT (tenant, study_uid) DO UPDATE SET instances = deletion_outbox.instances + EXCLUDED.instances""",
                (tenant, study_uid, out.instances),
            )
    return out


async def unsignalled_deletions(pool: AsyncConnectionPool, older_than_seconds: float = 0.0,
                                limit: int = 500) -> list[tuple[str, str, int]]:
    """(tenant, study, instances deleted) whose study workflow has not been told yet."""
    async with pool.connection() as conn:
        rows = await (await conn.execute(
            "SELECT tenant, study_uid, instances FROM deletion_outbox WHERE deleted_at < now() - make_interval(secs => %s)"
            " ORDER BY deleted_at LIMIT %s", (older_than_seconds, limit),
        )).fetchall()
    return [(r[0], r[1], r[2]) for r in rows]


async def deletion_signalled(pool: AsyncConnectionPool, tenant: str, study_uid: str, instances: int) -> None:
    """The workflow has `instances` of the study's deletions; later ones stay in the outbox."""
    async with pool.connection() as conn, conn.transaction():
        await conn.execute("UPDATE deletion_outbox SET instances = instances - %s WHERE tenant = %s AND study_uid = %s",
                           (instances, tenant, study_uid))
        await conn.execute("DELETE FROM deletion_outbox WHERE tenant = %s AND study_uid = %s AND instances <= 0",
                           (tenant, study_uid))
