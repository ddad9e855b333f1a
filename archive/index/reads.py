"""Lookups for retrieval: which blobs make up a study, series or instance of a tenant."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from psycopg_pool import AsyncConnectionPool

from archive.dicom.dicom_json import DOCUMENT_FORMAT
from archive.index.instance_state import served
from archive.index.scope import instance_scope


@dataclass(frozen=True)
class StoredObject:
    study_uid: str
    series_uid: str
    sop_uid: str
    sop_class_uid: str
    blob_key: str
    transfer_syntax: str
    transcoded_key: str | None
    size: int


@dataclass(frozen=True)
class SeriesMetadata:
    series_uid: str
    study_date: str | None
    metadata_key: str | None
    metadata_state: str
    version: int  # moved by every replace, repair and delete in the series; a store moves live_count
    metadata_version: int | None  # the version the generated document shows
    metadata_instances: int | None  # and its number of instances
    metadata_format: int | None  # archive.dicom.dicom_json.DOCUMENT_FORMAT when it was written; None: before formats
    live_count: int

    @property
    def document_fresh(self) -> bool:
        """The generated document is the series as it is now."""
        return (
            self.metadata_key is not None
            and self.metadata_state in ("ready", "partial")
            and self.metadata_version == self.version
            and self.metadata_instances == self.live_count
            and self.metadata_format == DOCUMENT_FORMAT
        )


_OBJECT_COLUMNS = "i.study_uid, i.series_uid, i.sop_uid, i.sop_class_uid, i.blob_key, i.transfer_syntax, i.transcoded_key, i.size"


async def find_objects(
    pool: AsyncConnectionPool, tenant: str, study_uid: str, series_uid: str | None = None, sop_uid: str | None = None
) -> list[StoredObject]:
    where, params = instance_scope(tenant, study_uid, series_uid, sop_uid, alias="i")
    async with pool.connection() as conn:
        rows = await (
            await conn.execute(
                f"SELECT {_OBJECT_COLUMNS} FROM instance i WHERE {where} AND {served('i')}"
                " ORDER BY i.series_uid, i.instance_number NULLS LAST, i.sop_uid",
                params,
            )
        ).fetchall()
    return [StoredObject(*r) for r in rows]


async def find_object_anywhere(pool: AsyncConnectionPool, tenant: str, sop_uid: str) -> StoredObject | None:
    async with pool.connection() as conn:
        row = await (
            await conn.execute(
                f"SELECT {_OBJECT_COLUMNS} FROM instance i WHERE i.tenant = %s AND i.sop_uid = %s AND {served('i')}",
                (tenant, sop_uid),
            )
        ).fetchone()
    return StoredObject(*row) if row else None


async def series_of_study(
    pool: AsyncConnectionPool, tenant: str, study_uid: str, series_uid: str | None = None
) -> list[SeriesMetadata]:
    where, params = ["se.tenant = %s", "se.study_uid = %s"], [tenant, study_uid]
    if series_uid is not None:
        where.append("se.series_uid = %s")
        params.append(series_uid)
    async with pool.connection() as conn:
        rows = await (
            await conn.execute(
                f"""SELECT se.series_uid, st.study_date, se.metadata_key, se.metadata_state, se.version, se.metadata_version, se.metadata_instances,
                       se.metadata_format,
                       (SELECT count(*) FROM instance c WHERE c.tenant = se.tenant AND c.series_uid = se.series_uid
                          AND {served("c")})
                FROM series se JOIN study st ON st.tenant = se.tenant AND st.study_uid = se.study_uid
                WHERE {" AND ".join(where)} ORDER BY se.series_number NULLS LAST, se.series_uid""",
                params,
            )
        ).fetchall()
    return [SeriesMetadata(*r) for r in rows]


async def objects_named_by(pool: AsyncConnectionPool, tenant: str, sop_sql: str, params: list[Any]) -> list[StoredObject]:
    """The stored objects whose SOP Instance UIDs `sop_sql` (a SELECT of one column) lists, in its order."""
    async with pool.connection() as conn:
        rows = await (
            await conn.execute(
                f"SELECT {_OBJECT_COLUMNS} FROM (SELECT m.sop_uid, row_number() OVER () AS n FROM ({sop_sql}) AS m) AS named"
                f" JOIN instance i ON i.tenant = %s AND i.sop_uid = named.sop_uid AND {served('i')} ORDER BY named.n",
                [*params, tenant],
            )
        ).fetchall()
    return [StoredObject(*r) for r in rows]
