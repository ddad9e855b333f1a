"""Deleting instances a rejection withdrew, as rejection expiry and lifecycle retention both do:
their rows in one transaction (only those still rejected and not restored, so a re-run after a
crash deletes nothing twice), then their blobs, then the audit trail."""

from __future__ import annotations

from typing import Any

from activities.context import ActivityContext
from archive.audit import AuditAction, AuditEvent, Outcome, record_now
from archive.blobstore.removal import remove_blobs
from archive.index.deletion import delete_rejected


async def delete_withdrawn(
    ctx: ActivityContext, tenant: str, study_uid: str, sop_uids: list[str], subject: str, detail: dict[str, Any]
) -> int:
    """How many instances went; `subject` and `detail` say who deleted them and why, in the audit trail."""
    deleted = await delete_rejected(ctx.pool, tenant, study_uid, sop_uids)
    await ctx.in_background(remove_blobs, ctx.blobs, deleted.blob_keys, f"an instance deleted by {subject}")
    await record_now(
        ctx.pool,
        AuditEvent(
            action=AuditAction.DELETE,
            outcome=Outcome.SUCCESS,
            subject=subject,
            method="none",
            source="workflow",
            tenant=tenant,
            study_uid=study_uid,
            detail={**detail, "instances": deleted.instances},
        ),
    )
    return deleted.instances
