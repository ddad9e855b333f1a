"""An instance's states after receipt: received -> stored -> verified -> committed (or failed)."""

from __future__ import annotations

from dataclasses import dataclass

from psycopg_pool import AsyncConnectionPool

from archive.dicom.dicom_json import DOCUMENT_FORMAT
from archive.index.instance_state import InstanceState, served


@dataclass(frozen=True)
class InstanceFile:
    sop_uid: str
    series_uid: str
    blob_key: str
    size: int
    sha256: str
    transfer_syntax: str


async def claim_received(pool: AsyncConnectionPool, tenant: str, study_uid: str) -> int:
    """The workflow's store step: take the instances received so far into this pass."""
    async with pool.connection() as conn:
        cur = await conn.execute(
            "UPDATE instance SET state = 'stored' WHERE tenant = %s AND study_uid = %s AND state = 'received'",
            (tenant, study_uid),
        )
        return cur.rowcount


async def instances_in_state(pool: AsyncConnectionPool, tenant: str, study_uid: str, state: InstanceState) -> list[InstanceFile]:
    async with pool.connection() as conn:
        rows = await (
            await conn.execute(
                """SELECT sop_uid, series_uid, blob_key, size, sha256, transfer_syntax FROM instance
               WHERE tenant = %s AND study_uid = %s AND state = %s ORDER BY series_uid, instance_number, sop_uid""",
                (tenant, study_uid, state),
            )
        ).fetchall()
    return [InstanceFile(*r) for r in rows]


async def failed_in_study(pool: AsyncConnectionPool, tenant: str, study_uid: str) -> int:
    """How many of the study's instances a step refused for good: the durable count, which a pass that
    is run again after its result was lost (a crash, a local activity's workflow task failing) still gives."""
    async with pool.connection() as conn:
        row = await (
            await conn.execute(
                "SELECT count(*) FROM instance WHERE tenant = %s AND study_uid = %s AND state = 'failed'", (tenant, study_uid)
            )
        ).fetchone()
    return row[0] if row else 0


async def set_state(
    pool: AsyncConnectionPool, tenant: str, sop_uid: str, state: InstanceState, reason: str | None = None
) -> None:
    async with pool.connection() as conn:
        # a failed instance is no longer served: its series' metadata changes, in the same statement
        await conn.execute(
            """WITH changed AS (UPDATE instance SET state = %(state)s, failure_reason = %(reason)s
                                WHERE tenant = %(tenant)s AND sop_uid = %(sop)s RETURNING series_uid)
               UPDATE series se SET version = nextval('series_version_seq') FROM changed
               WHERE %(state)s = 'failed' AND se.tenant = %(tenant)s AND se.series_uid = changed.series_uid""",
            {"state": state, "reason": reason, "tenant": tenant, "sop": sop_uid},
        )


async def mark_verified(pool: AsyncConnectionPool, tenant: str, sop_uids: list[str]) -> int:
    """Stored instances whose blobs checked out, in one statement (one commit for many)."""
    if not sop_uids:
        return 0
    async with pool.connection() as conn:
        cursor = await conn.execute(
            "UPDATE instance SET state = 'verified', failure_reason = NULL WHERE tenant = %s AND sop_uid = ANY(%s) AND state = 'stored'",
            (tenant, sop_uids),
        )
        return cursor.rowcount


async def commit_checked(pool: AsyncConnectionPool, tenant: str, checked: list[tuple[str, str]]) -> int:
    """Received instances whose blobs were read back and checked, (SOP Instance UID, blob key) each,
    committed in one statement: one row version per instance instead of the three of the store,
    verify and commit steps (the instance row's updates are never HOT). An instance replaced since
    it was checked has another blob key: it stays received, for the next pass."""
    if not checked:
        return 0
    sop_uids, keys = [c[0] for c in checked], [c[1] for c in checked]
    async with pool.connection() as conn:
        cursor = await conn.execute(
            """UPDATE instance i SET state = 'committed', committed_at = now(), failure_reason = NULL
               FROM unnest(%s::text[], %s::text[]) AS c(sop_uid, blob_key)
               WHERE i.tenant = %s AND i.sop_uid = c.sop_uid AND i.blob_key = c.blob_key AND i.state = 'received'""",
            (sop_uids, keys, tenant),
        )
        return cursor.rowcount


async def commit_verified(pool: AsyncConnectionPool, tenant: str, study_uid: str) -> int:
    async with pool.connection() as conn:
        cur = await conn.execute(
            """UPDATE instance SET state = 'committed', committed_at = now()
               WHERE tenant = %s AND study_uid = %s AND state = 'verified'""",
            (tenant, study_uid),
        )
        return cur.rowcount


async def record_transcoded(pool: AsyncConnectionPool, tenant: str, sop_uid: str, key: str, syntax: str) -> None:
    async with pool.connection() as conn:
        await conn.execute(
            "UPDATE instance SET transcoded_key = %s, transcoded_syntax = %s WHERE tenant = %s AND sop_uid = %s",
            (key, syntax, tenant, sop_uid),
        )


async def refresh_aggregates(pool: AsyncConnectionPool, tenant: str, study_uid: str) -> tuple[int, int]:
    """Study and series counts, ModalitiesInStudy and SOPClassesInStudy, from the instance rows."""
    async with pool.connection() as conn, conn.transaction():
        # the study row before its series rows, as receipts and DELETE take them: no deadlock
        await conn.execute("SELECT 1 FROM study WHERE tenant = %s AND study_uid = %s FOR NO KEY UPDATE", (tenant, study_uid))
        await conn.execute(
            f"""UPDATE series s SET num_instances = (SELECT count(*) FROM instance i
                   WHERE i.tenant = s.tenant AND i.series_uid = s.series_uid AND {served("i")})
               WHERE s.tenant = %s AND s.study_uid = %s""",
            (tenant, study_uid),
        )
        row = await (
            await conn.execute(
                f"""UPDATE study st SET
                   num_series = agg.series, num_instances = agg.instances,
                   modalities = agg.modalities, sop_classes = agg.sop_classes, updated_at = now()
               FROM (SELECT count(DISTINCT i.series_uid) AS series, count(*) AS instances,
                            coalesce(array_agg(DISTINCT se.modality) FILTER (WHERE se.modality IS NOT NULL), '{{}}') AS modalities,
                            array_agg(DISTINCT i.sop_class_uid) AS sop_classes
                     FROM instance i JOIN series se ON se.tenant = i.tenant AND se.series_uid = i.series_uid
                     WHERE i.tenant = %s AND i.study_uid = %s AND {served("i")}) agg
               WHERE st.tenant = %s AND st.study_uid = %s
               RETURNING num_series, num_instances""",
                (tenant, study_uid, tenant, study_uid),
            )
        ).fetchone()
    return (row[0], row[1]) if row else (0, 0)


async def set_study_state(pool: AsyncConnectionPool, tenant: str, study_uid: str, state: str) -> None:
    async with pool.connection() as conn:
        await conn.execute("UPDATE study SET state = %s WHERE tenant = %s AND study_uid = %s", (state, tenant, study_uid))


async def series_for_metadata(pool: AsyncConnectionPool, tenant: str, study_uid: str) -> list[tuple[str, str | None]]:
    """(series uid, study date) of every series of the study with committed instances."""
    async with pool.connection() as conn:
        rows = await (
            await conn.execute(
                """SELECT DISTINCT i.series_uid, st.study_date FROM instance i
               JOIN study st ON st.tenant = i.tenant AND st.study_uid = i.study_uid
               WHERE i.tenant = %s AND i.study_uid = %s AND i.state = 'committed'""",
                (tenant, study_uid),
            )
        ).fetchall()
    return [(r[0], r[1]) for r in rows]


@dataclass(frozen=True)
class SeriesSnapshot:
    """A series at one version, read in one statement: its committed instances, and whether they
    are all it serves (nothing received but not yet committed)."""

    version: int | None
    committed: list[InstanceFile]
    complete: bool

    @property
    def document_version(self) -> tuple[int, int] | None:
        """The version and instance count a metadata document of `committed` shows; None when it
        would miss instances."""
        return (self.version, len(self.committed)) if self.complete and self.version is not None else None


async def series_snapshot(pool: AsyncConnectionPool, tenant: str, series_uid: str) -> SeriesSnapshot:
    async with pool.connection() as conn:
        rows = await (
            await conn.execute(
                f"""SELECT se.version, i.state, i.sop_uid, i.series_uid, i.blob_key, i.size, i.sha256, i.transfer_syntax
               FROM series se LEFT JOIN instance i
                 ON i.tenant = se.tenant AND i.series_uid = se.series_uid AND {served("i")}
               WHERE se.tenant = %s AND se.series_uid = %s ORDER BY i.instance_number, i.sop_uid""",
                (tenant, series_uid),
            )
        ).fetchall()
    present = [r for r in rows if r[1] is not None]
    return SeriesSnapshot(
        rows[0][0] if rows else None,
        [InstanceFile(*r[2:]) for r in present if r[1] == InstanceState.COMMITTED],
        all(r[1] == InstanceState.COMMITTED for r in present),
    )


async def record_metadata(
    pool: AsyncConnectionPool,
    tenant: str,
    series_uid: str,
    key: str | None,
    error: str | None,
    version: tuple[int, int] | None = None,
) -> None:
    """`version`: the series version and instance count the document shows
    (SeriesSnapshot.document_version); WADO-RS serves the document only while the series is still at both."""
    shown, instances = version if version is not None else (None, None)
    async with pool.connection() as conn:
        await conn.execute(
            """UPDATE series SET metadata_key = coalesce(%s, metadata_key), metadata_state = %s,
                   metadata_error = %s, metadata_attempts = metadata_attempts + 1, metadata_version = %s,
                   metadata_instances = %s, metadata_format = coalesce(%s, metadata_format)
               WHERE tenant = %s AND series_uid = %s""",
            (
                key,
                "ready" if error is None else "partial" if key else "failed",
                error,
                shown,
                instances,
                DOCUMENT_FORMAT if key else None,
                tenant,
                series_uid,
            ),
        )


async def studies_with_stale_documents(pool: AsyncConnectionPool, tenant: str | None = None) -> list[tuple[str, str]]:
    """(tenant, study uid) of the studies holding a series document written in another format than
    DOCUMENT_FORMAT (an older archive's): WADO-RS builds their metadata afresh until regenerated."""
    async with pool.connection() as conn:
        rows = await (
            await conn.execute(
                """SELECT DISTINCT tenant, study_uid FROM series
               WHERE metadata_key IS NOT NULL AND metadata_format IS DISTINCT FROM %s
                 AND (%s::text IS NULL OR tenant = %s) ORDER BY tenant, study_uid""",
                (DOCUMENT_FORMAT, tenant, tenant),
            )
        ).fetchall()
    return [(r[0], r[1]) for r in rows]
