"""What a lifecycle run has to do (archive/lifecycle): the studies a rule is due for at a given time,
the objects a compression rewrites, and what each rule already did to a study (so a re-run does
no part twice, and a study that received more instances since is looked at again)."""

from __future__ import annotations

from datetime import datetime, timedelta

from psycopg_pool import AsyncConnectionPool

from archive.index.instance_state import InstanceState
from archive.index.updates import StoredObject
from archive.lifecycle.rules import LifecycleRule
from archive.query.study_match import study_matches

NATIVE_SYNTAXES = ["1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.2"]  # what compression takes


def _age_condition(rule: LifecycleRule) -> str:
    if rule.counted_from == "study_date":
        return "s.study_date IS NOT NULL AND s.study_date <> '' AND s.study_date <= %(cut_date)s"
    return "(SELECT max(i.received_at) FROM instance i WHERE i.tenant = s.tenant AND i.study_uid = s.study_uid) <= %(cut)s"


async def due_studies(
    pool: AsyncConnectionPool, rule: LifecycleRule, as_of: datetime, limit: int = 1000
) -> list[tuple[str, str]]:
    """(tenant, study) the rule applies to at `as_of`: old enough, ready, matching, not done since
    its last instance came, and for a deletion not on hold."""
    cut = as_of - timedelta(days=rule.after_days)
    sql = f"""SELECT s.tenant, s.study_uid FROM study s
              WHERE s.state = 'ready' AND (%(tenant)s::text IS NULL OR s.tenant = %(tenant)s) AND {_age_condition(rule)}
                AND NOT EXISTS (SELECT 1 FROM lifecycle_done d WHERE d.tenant = s.tenant AND d.study_uid = s.study_uid
                                AND d.rule = %(rule)s AND d.instances = s.num_instances)
                AND (%(action)s <> 'delete' OR NOT EXISTS (SELECT 1 FROM study_hold h
                                                           WHERE h.tenant = s.tenant AND h.study_uid = s.study_uid))
              ORDER BY s.tenant, s.study_uid LIMIT %(limit)s"""
    params = {
        "tenant": rule.tenant,
        "cut": cut,
        "cut_date": cut.strftime("%Y%m%d"),
        "rule": rule.name,
        "action": rule.action,
        "limit": limit,
    }
    async with pool.connection() as conn:
        rows = await (await conn.execute(sql, params)).fetchall()
    return [(t, s) for t, s in rows if not rule.match or await study_matches(pool, rule.match, t, s)]


async def native_objects(pool: AsyncConnectionPool, tenant: str, study_uid: str) -> list[StoredObject]:
    """The study's committed objects stored uncompressed in the hot store: what a compression rule
    rewrites (a tiered object stays cold: compressing it would bring it back)."""
    async with pool.connection() as conn:
        rows = await (
            await conn.execute(
                """SELECT i.sop_uid, i.series_uid, i.blob_key, i.transcoded_key, st.study_date FROM instance i
                   JOIN study st ON st.tenant = i.tenant AND st.study_uid = i.study_uid
                   WHERE i.tenant = %s AND i.study_uid = %s AND i.state = %s AND i.transfer_syntax = ANY(%s)
                     AND i.tier = 'hot'
                   ORDER BY i.sop_uid""",
                (tenant, study_uid, InstanceState.COMMITTED.value, NATIVE_SYNTAXES),
            )
        ).fetchall()
    return [StoredObject(*r) for r in rows]


async def mark_done(pool: AsyncConnectionPool, tenant: str, study_uid: str, rule: str, detail: str, saved: int = 0) -> None:
    """The rule's work on the study as it is now (its instance count): a later instance makes it due again."""
    async with pool.connection() as conn:
        await conn.execute(
            """INSERT INTO lifecycle_done (tenant, study_uid, rule, instances, detail, bytes_saved)
               SELECT tenant, study_uid, %s, num_instances, %s, %s FROM study WHERE tenant = %s AND study_uid = %s
               ON CONFLICT (tenant, study_uid, rule) DO UPDATE SET instances = EXCLUDED.instances,
                   detail = EXCLUDED.detail, bytes_saved = lifecycle_done.bytes_saved + EXCLUDED.bytes_saved, done_at = now()""",
            (rule, detail, saved, tenant, study_uid),
        )
