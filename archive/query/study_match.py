"""Whether a stored study matches a set of QIDO study keys: what a forwarding rule's or a lifecycle
rule's `match` means, exactly what the same keys mean to a viewer's search (wildcards, lists, date
ranges, ModalitiesInStudy)."""

from __future__ import annotations

from psycopg_pool import AsyncConnectionPool

from archive.query.qido import build_qido


def check_study_keys(match: dict[str, str]) -> dict[str, str]:
    """`match` as given; ValueError (BadQuery) naming a malformed value or a key a study query cannot use."""
    query = build_qido("study", "default", {k: [v] for k, v in match.items()})
    ignored = [w for w in query.warnings if "ignored" in w]
    if ignored:
        raise ValueError(f"match keys a study query cannot use: {ignored[0]}")
    return match


async def study_matches(pool: AsyncConnectionPool, match: dict[str, str], tenant: str, study_uid: str) -> bool:
    params = {**{k: [v] for k, v in match.items()}, "StudyInstanceUID": [study_uid], "limit": ["1"]}
    query = build_qido("study", tenant, params)
    async with pool.connection() as conn:
        return await (await conn.execute(query.sql, query.params)).fetchone() is not None
