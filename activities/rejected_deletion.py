"""Deleting instances a rejection withdrew, as rejection expiry and lifecycle retention both do:
their rows and the audit trail's event in one transaction (only those still rejected and not
restored, so a re-run after a crash deletes nothing twice), with their blobs queued for removal in
it too; then the blobs."""

from __future__ import annotations

from typing import Any

from activities.context import ActivityContext
from archive.audit import AuditAction, AuditEvent, Outcome
from archive.index.deletion import delete_rejected
from archive.services.removals import remove_queued


async def delete_withdrawn(
    ctx: ActivityContext, tenant: str, study_uid: str, sop_uids: list[str], subject: str, detail: dict[str, Any]
) -> int:
    """How many instances went; `subject` and `detail` say who deleted them and why, in the audit trail."""

    def audited(instances: int) -> AuditEvent:
        return AuditEvent(
            action=AuditAction.DELETE,
            outcome=Outcome.SUCCESS,
            subject=subject,
            method="none",
            source="workflow",
            tenant=tenant,
            study_uid=study_uid,
            detail={**detail, "instances": instances},
        )

    deleted = await delete_rejected(ctx.pool, tenant, study_uid, sop_uids, audited)
    await remove_queued(ctx.pool, ctx.blobs, deleted.blob_keys, f"an instance deleted by {subject}", ctx.in_background)
    return deleted.instances
