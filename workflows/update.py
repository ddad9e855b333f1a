"""UpdateWorkflow, id `update:{tenant}:{operation}`: a patient or study correction (a bulk update,
an HL7 ADT update, merge or new identifier) applied study by study. Each study is one activity
that writes new versions of its objects and switches the index to them in one transaction, so a
killed worker's retry either finds the study done (its log row) or does it again from the start;
nothing stored is overwritten, and the operation ends succeeded or failed with the reason."""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError

with workflow.unsafe.imports_passed_through():
    from contract import names
    from contract.payloads import UpdateOutcome, UpdateRequest, UpdateStudy

RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1), backoff_coefficient=2.0, maximum_interval=timedelta(minutes=1), maximum_attempts=20
)
HEARTBEAT = timedelta(seconds=30)


@workflow.defn(name=names.UPDATE_WORKFLOW)
class UpdateWorkflow:
    def __init__(self) -> None:
        self.outcome = UpdateOutcome()
        self.total = 0

    @workflow.query(name="progress")
    def progress(self) -> dict:
        return {"studies": self.outcome.studies, "of": self.total, "instances": self.outcome.instances}

    @workflow.run
    async def run(self, request: UpdateRequest) -> UpdateOutcome:
        try:
            studies: list[str] = await workflow.execute_activity(
                names.UPDATE_LIST, request, result_type=list[str], start_to_close_timeout=timedelta(minutes=1), retry_policy=RETRY
            )
            self.total = len(studies)
            for study_uid in studies:
                self.outcome.instances += await workflow.execute_activity(
                    names.UPDATE_STUDY,
                    UpdateStudy(request, study_uid),
                    result_type=int,
                    start_to_close_timeout=timedelta(hours=1),
                    heartbeat_timeout=HEARTBEAT,
                    retry_policy=RETRY,
                )
                self.outcome.studies += 1
        except ActivityError as err:
            self.outcome.status, self.outcome.error = "failed", str(err.cause or err)[:500]
        return await workflow.execute_activity(
            names.UPDATE_FINISH,
            args=[request, self.outcome],
            result_type=UpdateOutcome,
            start_to_close_timeout=timedelta(minutes=1),
            retry_policy=RETRY,
        )
