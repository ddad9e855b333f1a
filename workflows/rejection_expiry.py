"""RejectionExpiryWorkflow: deletes what IOCM rejection notes withdrew once its grace has passed
(archive/index/rejections.py). A Temporal Schedule starts one every
`rejection_expiry_interval_seconds`, and receipt of a 113039 (Data Retention Policy Expired) note
triggers one at once; each run is visible in the Temporal UI with what it deleted. Deleting is
idempotent (only rows still rejected go), so a retried or overlapping run does no part twice."""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from contract import names
    from contract.payloads import ExpiryOutcome, ExpiryRequest

RETRY = RetryPolicy(initial_interval=timedelta(seconds=2), backoff_coefficient=2.0, maximum_interval=timedelta(minutes=5))


@workflow.defn(name=names.REJECTION_EXPIRY_WORKFLOW)
class RejectionExpiryWorkflow:
    @workflow.run
    async def run(self, request: ExpiryRequest) -> ExpiryOutcome:
        as_of = request.as_of or workflow.now().isoformat()
        return await workflow.execute_activity(
            names.EXPIRE_REJECTIONS,
            ExpiryRequest(as_of),
            result_type=ExpiryOutcome,
            start_to_close_timeout=timedelta(hours=2),
            heartbeat_timeout=timedelta(seconds=60),
            retry_policy=RETRY,
        )
