"""`dicomflow audit`: the audit trail from the index, for an operator on the archive's host."""

from __future__ import annotations

import argparse
import asyncio
import json
from datetime import datetime

from archive.audit import AuditQuery, as_json, search_audit
from archive.config.settings import Settings
from archive.index.pool import open_index_pool


def add_parser(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    audit = sub.add_parser("audit", help="show audit events, newest first")
    audit.add_argument("--since", type=datetime.fromisoformat, help="ISO time, e.g. 2026-11-23T08:00")
    audit.add_argument("--until", type=datetime.fromisoformat)
    audit.add_argument("--tenant")
    audit.add_argument("--subject", help="token subject or ae:CALLING_AE")
    audit.add_argument("--study", help="Study Instance UID")
    audit.add_argument("--limit", type=int, default=50)
    audit.add_argument("--json", action="store_true", help="one JSON object per line")


async def _events(settings: Settings, query: AuditQuery) -> list[dict]:
    pool = await open_index_pool(settings.effective_postgres_dsn(), max_size=1)
    try:
        return [as_json(row) for row in await search_audit(pool, query)]
    finally:
        await pool.close()


def cmd_audit(settings: Settings, args: argparse.Namespace) -> int:
    query = AuditQuery(args.since, args.until, args.tenant, args.subject, args.study, max(1, min(args.limit, 100_000)))
    for event in asyncio.run(_events(settings, query)):
        if args.json:
            print(json.dumps(event))
            continue
        where = " ".join(filter(None, [event["tenant"], event["study_uid"]]))
        outcome = "ok" if event["outcome"] == 0 else f"outcome {event['outcome']}"
        print(
            f"{event['occurred_at']}  {event['event_name']} ({event['event_code']}, {event['action']})  "
            f"{event['subject']} from {event['peer'] or '?'} via {event['source']}  {where}  {outcome}"
        )
    return 0
