"""The rejection expiry's one step: delete what rejection notes withdrew once its grace has passed
(113039 at once), study by study, blobs after rows, each study in the audit trail. Idempotent:
only rows still rejected and not restored go, so a retry after a crash finishes the job."""

from __future__ import annotations

from datetime import datetime

from temporalio import activity

from activities.context import ActivityContext
from activities.rejected_deletion import delete_withdrawn
from archive.index.rejections import due_for_deletion
from contract import names
from contract.payloads import ExpiryOutcome, ExpiryRequest


class RejectionActivities:
    def __init__(self, ctx: ActivityContext) -> None:
        self.ctx = ctx

    def all(self) -> list:
        return [self.expire]

    @activity.defn(name=names.EXPIRE_REJECTIONS)
    async def expire(self, request: ExpiryRequest) -> ExpiryOutcome:
        as_of = datetime.fromisoformat(request.as_of)
        out = ExpiryOutcome()
        while due := await due_for_deletion(self.ctx.pool, as_of, self.ctx.settings.lifecycle.rejected_retention_days):
            for tenant, study_uid, sop_uids in due:
                activity.heartbeat(study_uid)
                await self._delete(tenant, study_uid, sop_uids)
                out.studies += 1
                out.instances += len(sop_uids)
        return out

    async def _delete(self, tenant: str, study_uid: str, sop_uids: list[str]) -> None:
        reason = {"reason": "IOCM rejection expired", "sop_uids": sop_uids[:100]}
        await delete_withdrawn(self.ctx, tenant, study_uid, sop_uids, "rejection-expiry", reason)
