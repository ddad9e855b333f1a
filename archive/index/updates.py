"""Patient and study updates in the index (archive/corrections): the operations (a bulk update, an
HL7 ADT message), each study's switch to its rewritten objects in one transaction, and the log of
what each attribute held before, so the original values stay recoverable for audit."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from psycopg import AsyncConnection
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool

from archive.index.instances import bump_series
from archive.index.locks import lock_study
from archive.index.versions import NewVersion, move_to_versions

# the study row's column for each attribute an update may change (archive/corrections/changes.py)
STUDY_COLUMNS = {
    "PatientName": "patient_name",
    "PatientID": "patient_id",
    "IssuerOfPatientID": "issuer",
    "PatientBirthDate": "patient_birth_date",
    "PatientSex": "patient_sex",
    "StudyDescription": "study_description",
    "AccessionNumber": "accession_number",
    "ReferringPhysicianName": "referring_physician",
    "StudyID": "study_id",
}


@dataclass(frozen=True)
class StoredObject:
    sop_uid: str
    series_uid: str
    blob_key: str
    transcoded_key: str | None
    study_date: str | None


async def create_operation(
    pool: AsyncConnectionPool, op_id: str, tenant: str, kind: str, request: dict[str, Any], created_by: str
) -> bool:
    """Record an operation; False when one with this id exists (a request or message seen before)."""
    async with pool.connection() as conn:
        row = await (
            await conn.execute(
                """INSERT INTO update_operation (id, tenant, kind, request, created_by) VALUES (%s, %s, %s, %s, %s)
                   ON CONFLICT (id) DO NOTHING RETURNING 1""",
                (op_id, tenant, kind, Jsonb(request), created_by),
            )
        ).fetchone()
    return row is not None


async def operation(pool: AsyncConnectionPool, op_id: str) -> dict[str, Any] | None:
    async with pool.connection() as conn:
        row = await (
            await conn.execute(
                """SELECT id, tenant, kind, status, studies_total, studies_done, error, created_at, updated_at
                   FROM update_operation WHERE id = %s""",
                (op_id,),
            )
        ).fetchone()
    if row is None:
        return None
    keys = ("id", "tenant", "kind", "status", "studies_total", "studies_done", "error", "created_at", "updated_at")
    return dict(zip(keys, row))


async def set_total(pool: AsyncConnectionPool, op_id: str, total: int) -> None:
    async with pool.connection() as conn:
        await conn.execute("UPDATE update_operation SET studies_total = %s, updated_at = now() WHERE id = %s", (total, op_id))


async def finish(pool: AsyncConnectionPool, op_id: str, status: str, error: str | None = None) -> None:
    async with pool.connection() as conn:
        await conn.execute(
            "UPDATE update_operation SET status = %s, error = %s, updated_at = now() WHERE id = %s", (status, error, op_id)
        )


async def studies_of_patient(pool: AsyncConnectionPool, tenant: str, patient_id: str) -> list[str]:
    async with pool.connection() as conn:
        rows = await (
            await conn.execute(
                "SELECT study_uid FROM study WHERE tenant = %s AND patient_id = %s ORDER BY study_uid", (tenant, patient_id)
            )
        ).fetchall()
    return [r[0] for r in rows]


async def held_studies(pool: AsyncConnectionPool, tenant: str, study_uids: list[str]) -> list[str]:
    async with pool.connection() as conn:
        rows = await (
            await conn.execute(
                "SELECT study_uid FROM study WHERE tenant = %s AND study_uid = ANY(%s) ORDER BY study_uid", (tenant, study_uids)
            )
        ).fetchall()
    return [r[0] for r in rows]


async def patient_only_elsewhere(pool: AsyncConnectionPool, tenant: str, patient_id: str) -> str | None:
    """Another tenant that holds `patient_id` when this tenant does not: a merge into it would cross the wall."""
    async with pool.connection() as conn:
        row = await (
            await conn.execute(
                """SELECT min(tenant) FROM patient WHERE patient_id = %s AND tenant <> %s
                   AND NOT EXISTS (SELECT 1 FROM patient p WHERE p.tenant = %s AND p.patient_id = %s)""",
                (patient_id, tenant, tenant, patient_id),
            )
        ).fetchone()
    return row[0] if row else None


async def study_objects(pool: AsyncConnectionPool, tenant: str, study_uid: str) -> list[StoredObject]:
    """Every instance row of the study, whatever its state (a rejected one may be restored later)."""
    async with pool.connection() as conn:
        rows = await (
            await conn.execute(
                """SELECT i.sop_uid, i.series_uid, i.blob_key, i.transcoded_key, st.study_date FROM instance i
                   JOIN study st ON st.tenant = i.tenant AND st.study_uid = i.study_uid
                   WHERE i.tenant = %s AND i.study_uid = %s ORDER BY i.sop_uid""",
                (tenant, study_uid),
            )
        ).fetchall()
    return [StoredObject(*r) for r in rows]


async def applied(pool: AsyncConnectionPool, op_id: str, study_uid: str) -> bool:
    async with pool.connection() as conn:
        row = await (
            await conn.execute("SELECT 1 FROM update_log WHERE operation_id = %s AND study_uid = %s", (op_id, study_uid))
        ).fetchone()
    return row is not None


async def switch_study(
    pool: AsyncConnectionPool,
    op_id: str,
    tenant: str,
    study_uid: str,
    changes: dict[str, str],
    versions: list[NewVersion],
    before: dict[str, str | None],
) -> list[str]:
    """In one transaction: each instance row moves to its new version (unless replaced meanwhile),
    the study row takes the new values, the change feed and the log record it. The blob keys no row
    names any more (to remove after the commit)."""
    async with pool.connection() as conn, conn.transaction():
        await lock_study(conn, tenant, study_uid, exclusive=True)
        moved = await move_to_versions(conn, tenant, versions)
        await _update_study(conn, tenant, study_uid, changes)
        await bump_series(conn, tenant, sorted({series for _, series, _ in moved}))
        await conn.execute(
            """INSERT INTO update_log (operation_id, tenant, study_uid, original, changed) VALUES (%s, %s, %s, %s, %s)
               ON CONFLICT DO NOTHING""",
            (op_id, tenant, study_uid, Jsonb(before), Jsonb(changes)),
        )
        await conn.execute(
            "UPDATE update_operation SET studies_done = studies_done + 1, updated_at = now() WHERE id = %s", (op_id,)
        )
    replaced = {v.sop_uid for v in versions} - {sop for sop, _, _ in moved}
    gone = [v.old_key for v in versions if v.sop_uid not in replaced] + [t for _, _, t in moved if t]
    return gone + [v.new_key for v in versions if v.sop_uid in replaced]


async def _update_study(conn: AsyncConnection, tenant: str, study_uid: str, changes: dict[str, str]) -> None:
    sets = ", ".join(f"{STUDY_COLUMNS[k]} = %s" for k in changes)
    await conn.execute(
        f"UPDATE study SET {sets}, updated_at = now() WHERE tenant = %s AND study_uid = %s",
        (*changes.values(), tenant, study_uid),
    )


async def reconcile_patient(pool: AsyncConnectionPool, tenant: str, prior_id: str | None, changes: dict[str, str]) -> None:
    """The patient rows, the worklist and the performed steps follow a merge or a new identifier:
    the surviving patient's row holds the new values, the prior one goes once no study names it."""
    new_id = changes.get("PatientID")
    old_id = prior_id or new_id
    if old_id is None:
        return
    async with pool.connection() as conn, conn.transaction():
        await conn.execute(
            """INSERT INTO patient (tenant, patient_id, issuer, patient_name, birth_date, sex)
               SELECT DISTINCT ON (patient_id, issuer) tenant, patient_id, issuer, patient_name, patient_birth_date, patient_sex
               FROM study WHERE tenant = %s AND patient_id = %s
               ON CONFLICT (tenant, patient_id, issuer) DO UPDATE SET patient_name = EXCLUDED.patient_name,
                   birth_date = EXCLUDED.birth_date, sex = EXCLUDED.sex""",
            (tenant, new_id or old_id),
        )
        if new_id and new_id != old_id:
            await conn.execute(
                """DELETE FROM patient p WHERE p.tenant = %s AND p.patient_id = %s
                   AND NOT EXISTS (SELECT 1 FROM study s WHERE s.tenant = p.tenant AND s.patient_id = p.patient_id)""",
                (tenant, old_id),
            )
        await _follow_in_worklists(conn, tenant, old_id, changes)


async def _follow_in_worklists(conn: AsyncConnection, tenant: str, old_id: str, changes: dict[str, str]) -> None:
    values = {k: v for k, v in changes.items() if k in ("PatientID", "PatientName", "PatientBirthDate", "PatientSex")}
    if not values:
        return
    columns = {
        "PatientID": "patient_id",
        "PatientName": "patient_name",
        "PatientBirthDate": "patient_birth_date",
        "PatientSex": "patient_sex",
    }
    sets = ", ".join(f"{columns[k]} = %s" for k in values)
    patch = {_tag(k): {"vr": _VR[k], "Value": [_json(k, v)]} for k, v in values.items()}
    await conn.execute(
        f"UPDATE worklist_item SET {sets}, item = item || %s::jsonb, updated_at = now() WHERE tenant = %s AND patient_id = %s",
        (*values.values(), json.dumps(patch), tenant, old_id),
    )
    await conn.execute(
        """UPDATE performed_step SET item = item || %s::jsonb, updated_at = now()
           WHERE tenant = %s AND item->'00100020'->'Value'->>0 = %s""",
        (json.dumps(patch), tenant, old_id),
    )
    workitem_sets = ", ".join(
        f"{c} = %s" for k, c in (("PatientID", "patient_id"), ("PatientName", "patient_name")) if k in values
    )
    if workitem_sets:
        args = [values[k] for k in ("PatientID", "PatientName") if k in values]
        await conn.execute(
            f"UPDATE workitem SET {workitem_sets}, item = item || %s::jsonb, updated_at = now() WHERE tenant = %s AND patient_id = %s",
            (*args, json.dumps(patch), tenant, old_id),
        )


_VR = {"PatientID": "LO", "PatientName": "PN", "PatientBirthDate": "DA", "PatientSex": "CS"}
_TAGS = {"PatientID": "00100020", "PatientName": "00100010", "PatientBirthDate": "00100030", "PatientSex": "00100040"}


def _tag(keyword: str) -> str:
    return _TAGS[keyword]


def _json(keyword: str, value: str) -> Any:
    return {"Alphabetic": value} if keyword == "PatientName" else value


async def forget_operation(pool: AsyncConnectionPool, op_id: str) -> None:
    """An operation whose workflow could not be started: gone, so the request may be sent again."""
    async with pool.connection() as conn:
        await conn.execute("DELETE FROM update_operation WHERE id = %s AND studies_done = 0", (op_id,))
