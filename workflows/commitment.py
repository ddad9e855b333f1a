"""StorageCommitmentWorkflow, id `commit:{tenant}:{TransactionUID}`.

Waits until every referenced instance is committed (or the timeout passes; a reference the archive
never received only for the short grace the request carries), then has the N-EVENT-REPORT
delivered to the requesting AE, retried with backoff until it is.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from contract import names
    from contract.payloads import CommitmentReport, CommitmentRequest, CommitmentStatus

WAKE = names.COMMITMENT_WAKE
POLL_SECONDS = (1, 2, 5, 10, 30)  # a poll guards against a lost wake-up signal


workflow_id = names.commitment_workflow_id


@workflow.defn(name=names.COMMITMENT_WORKFLOW)
class StorageCommitmentWorkflow:
    def __init__(self) -> None:
        self.wakes = 0

    @workflow.signal(name=WAKE)
    def instances_committed(self) -> None:
        self.wakes += 1

    @workflow.run
    async def run(self, request: CommitmentRequest) -> CommitmentReport:
        deadline = workflow.now() + timedelta(seconds=request.timeout_seconds)
        polls = 0
        while True:
            status: CommitmentStatus = await workflow.execute_activity(
                names.COMMITMENT_CHECK,
                request,
                result_type=CommitmentStatus,
                start_to_close_timeout=timedelta(minutes=1),
            )
            if status.pending == 0 or workflow.now() >= deadline:
                break
            remaining = (deadline - workflow.now()).total_seconds()
            wait = min(POLL_SECONDS[min(polls, len(POLL_SECONDS) - 1)], max(remaining, 0.1))
            if status.unknown_wait_seconds > 0:  # look again as the grace for never-received references ends
                wait = min(wait, status.unknown_wait_seconds + 0.2)
            polls += 1
            seen = self.wakes
            try:
                await workflow.wait_condition(lambda: self.wakes != seen, timeout=timedelta(seconds=wait))  # noqa: B023 - awaited in this iteration
            except TimeoutError:
                pass
        return await workflow.execute_activity(
            names.COMMITMENT_REPORT,
            request,
            result_type=CommitmentReport,
            start_to_close_timeout=timedelta(minutes=2),
            retry_policy=RetryPolicy(
                initial_interval=timedelta(seconds=2), backoff_coefficient=2.0, maximum_interval=timedelta(minutes=5)
            ),
        )
