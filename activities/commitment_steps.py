"""Storage commitment steps: is every referenced instance committed, and the report to the AE."""

from __future__ import annotations

import asyncio

from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities import names
from activities.context import ActivityContext
from activities.event_report import (
    CLASS_INSTANCE_CONFLICT,
    NO_SUCH_OBJECT,
    PROCESSING_FAILURE,
    report_dataset,
    send_event_report,
)
from activities.types import CommitmentReport, CommitmentRequest, CommitmentStatus
from archive.index import commitments

Ref = tuple[str, str]  # (SOP Class UID, SOP Instance UID)
FailedRef = tuple[str, str, int]  # ... and the failure reason sent back


class CommitmentActivities:
    def __init__(self, ctx: ActivityContext) -> None:
        self.ctx = ctx

    def all(self) -> list:
        return [self.check, self.report]

    async def _classify(
        self, request: CommitmentRequest, final: bool,
    ) -> tuple[commitments.CommitmentRow, list[Ref], list[FailedRef], list[str]]:
        row = await commitments.load_request(self.ctx.pool, request.tenant, request.transaction_uid)
        if row is None:
            raise ApplicationError(f"no commitment request {request.transaction_uid}", non_retryable=True)
        states = await commitments.instance_states(self.ctx.pool, request.tenant, [i for _, i in row.refs])
        committed, failed, pending = [], [], []
        for sop_class, sop_uid in row.refs:
            state, stored_class = states.get(sop_uid, (None, None))
            if state == "committed" and stored_class == sop_class:
                committed.append((sop_class, sop_uid))
            elif state == "committed":
                failed.append((sop_class, sop_uid, CLASS_INSTANCE_CONFLICT))
            elif state == "failed":
                failed.append((sop_class, sop_uid, PROCESSING_FAILURE))
            elif final:
                failed.append((sop_class, sop_uid, NO_SUCH_OBJECT if state is None else PROCESSING_FAILURE))
            else:
                pending.append(sop_uid)
        return row, committed, failed, pending

    @activity.defn(name=names.COMMITMENT_CHECK)
    async def check(self, request: CommitmentRequest) -> CommitmentStatus:
        _, committed, failed, pending = await self._classify(request, final=False)
        return CommitmentStatus(len(committed), len(failed), len(pending))

    @activity.defn(name=names.COMMITMENT_REPORT)
    async def report(self, request: CommitmentRequest) -> CommitmentReport:
        row, committed, failed, _ = await self._classify(request, final=True)
        settings = self.ctx.settings
        peer = settings.ae_table.get(row.calling_ae)
        if peer is None or not peer.reachable:
            await commitments.record_outcome(self.ctx.pool, request.tenant, request.transaction_uid, "undeliverable", committed, failed)
            raise ApplicationError(
                f"calling AE {row.calling_ae!r} has no address in the AE table: add its host and port to 'ae_table'",
                non_retryable=True,
            )
        event_type = 2 if failed else 1
        ds = report_dataset(request.transaction_uid, committed, failed)
        await asyncio.to_thread(send_event_report, settings.ae_title, row.calling_ae, peer, ds, event_type)
        await commitments.record_outcome(self.ctx.pool, request.tenant, request.transaction_uid, "reported", committed, failed)
        return CommitmentReport(True, event_type, f"{len(committed)} committed, {len(failed)} failed")
