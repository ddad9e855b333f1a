"""ForwardWorkflow, id `forward:{tenant}:{rule}:{StudyInstanceUID}`: one forwarding rule sends one
study to its destination, for as long as it takes.

Each round lists what the destination has not acknowledged yet (a retrieve in the index, like a
C-MOVE's), sends it with the C-MOVE sending step and closes its books. The study workflow signals
this one each time it has processed the study; a signal that came during a round means new
instances may be waiting, so another round follows: only what is new goes, and Temporal refuses to
complete a run that has a signal it did not see. Sending retries while the destination is down,
without giving up (a PACS may be down for a weekend); each retry is a server-side retry of one
activity, so the history does not grow with it.

An administrator may cancel a forward (Temporal cancellation: `DELETE /admin/forwarding/workflows/
...` or `dicomflow forward cancel`): the round under way is withdrawn (what was not sent stays
owed, for a later forward of the rule to send), the cancellation goes into the audit trail, and the
workflow ends cancelled.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, is_cancelled_exception

with workflow.unsafe.imports_passed_through():
    from contract import names
    from contract.payloads import ForwardRequest, ForwardRound, ForwardSend, RetrieveEnd, RetrieveOutcome, RetrieveRequest

CANCELLABLE_PATCH = "forward-cancel-withdraws"  # a cancelled forward withdraws its round and audits it

HEARTBEAT = timedelta(seconds=10)  # a killed worker's attempt is retried elsewhere after this
PERSISTENT_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1), backoff_coefficient=2.0, maximum_interval=timedelta(minutes=10)
)
STEP_TIMEOUT = timedelta(minutes=2)
ROUNDS_BEFORE_CUT = 100  # continue-as-new well before the history grows large


@workflow.defn(name=names.FORWARD_WORKFLOW)
class ForwardWorkflow:
    def __init__(self) -> None:
        self.signals = 0
        self.sent = 0
        self.round: RetrieveRequest | None = None  # the retrieve of the round under way, until its books close

    @workflow.signal(name=names.FORWARD_SIGNAL)
    def study_processed(self) -> None:
        self.signals += 1

    @workflow.query(name="progress")
    def progress(self) -> dict[str, int]:
        return {"sent": self.sent, "signals": self.signals}

    @workflow.run
    async def run(self, request: ForwardRequest) -> int:
        try:
            return await self._rounds(request)
        except BaseException as err:
            if not is_cancelled_exception(err) or not workflow.patched(CANCELLABLE_PATCH):
                raise
            await self._withdraw(request)
            raise  # the workflow ends cancelled

    async def _rounds(self, request: ForwardRequest) -> int:
        for _ in range(ROUNDS_BEFORE_CUT):
            seen = self.signals
            retrieve: RetrieveRequest = await workflow.execute_activity(
                names.FORWARD_LIST, request, result_type=RetrieveRequest, start_to_close_timeout=STEP_TIMEOUT
            )
            if retrieve.instances:
                self.round = retrieve
                outcome = await self._send(request, retrieve)
                self.round = None
                self.sent += outcome.completed
                await workflow.execute_local_activity(
                    names.FORWARD_AUDIT, ForwardRound(request, outcome), start_to_close_timeout=STEP_TIMEOUT
                )
            if self.signals == seen:
                return self.sent
        workflow.continue_as_new(request)

    async def _withdraw(self, request: ForwardRequest) -> None:
        """Cancelled: close the round's books without sending the rest, and say so in the audit trail."""
        outcome = RetrieveOutcome("cancelled", 0, 0, 0)
        if self.round is not None:
            outcome = await workflow.execute_activity(
                names.FORWARD_WITHDRAW, self.round, result_type=RetrieveOutcome, start_to_close_timeout=STEP_TIMEOUT
            )
        await workflow.execute_local_activity(
            names.FORWARD_AUDIT, ForwardRound(request, outcome, cancelled=True), start_to_close_timeout=STEP_TIMEOUT
        )

    @staticmethod
    async def _send(request: ForwardRequest, retrieve: RetrieveRequest) -> RetrieveOutcome:
        gave_up = None
        step, argument = (
            (names.FORWARD_STOW_SEND, ForwardSend(request, retrieve))
            if request.via == "stow"
            else (names.FORWARD_COPY_SEND, ForwardSend(request, retrieve))
            if request.via == "tenant"  # no forward started before copies existed says "tenant": no patch needed
            else (names.RETRIEVE_SEND, retrieve)
        )
        try:
            await workflow.execute_activity(
                step,
                argument,
                result_type=int,
                start_to_close_timeout=timedelta(hours=6),
                heartbeat_timeout=HEARTBEAT,
                retry_policy=PERSISTENT_RETRY,
            )
        except ActivityError as err:  # a refusal that no retry can mend (the destination left the AE table)
            if is_cancelled_exception(err) and workflow.patched(CANCELLABLE_PATCH):
                raise  # an administrator cancelled the forward: not a refusal
            gave_up = str(err.cause or err)
        return await workflow.execute_activity(
            names.RETRIEVE_FINISH,
            RetrieveEnd(retrieve, gave_up),
            result_type=RetrieveOutcome,
            start_to_close_timeout=STEP_TIMEOUT,
        )
