"""RetrieveWorkflow, id `move:{tenant}:{retrieve id}`: one C-MOVE, sent to its destination.

The SCP that took the C-MOVE recorded the instances to send and relays the counts to the
requester while this runs. Sending is one activity that resumes where the last attempt stopped;
it is retried with backoff while the destination is unreachable, then what is still owed is
counted as failed, so the requester always gets a final answer.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError

with workflow.unsafe.imports_passed_through():
    from contract import names
    from contract.payloads import RetrieveEnd, RetrieveOutcome, RetrieveRequest

# moves started before the books were closed by a local activity replay with it as an activity
LOCAL_FINISH_PATCH = "local-finish"
# moves started before small ones were sent by a local activity replay with an activity
LOCAL_SEND_PATCH = "local-send"
# A move of a few instances (a workstation pulling an image, a key object, a series) is sent by a
# local activity: no activity task to schedule, dispatch and report, and no second workflow task,
# which were ~30 ms of a 1-instance move. Larger ones keep an activity: it heartbeats its position,
# so the Temporal UI shows it pending and a killed worker's attempt is retried elsewhere in seconds.
LOCAL_SEND_MAX = 64
SEND_ATTEMPTS = 5  # about 30 s of retrying an unreachable destination before giving up
HEARTBEAT = timedelta(seconds=10)  # a killed worker's attempt is retried elsewhere after this
SEND_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=15),
    maximum_attempts=SEND_ATTEMPTS,
)


@workflow.defn(name=names.RETRIEVE_WORKFLOW)
class RetrieveWorkflow:
    @workflow.run
    async def run(self, request: RetrieveRequest) -> RetrieveOutcome:
        gave_up = None
        try:
            await self._send(request)
        except ActivityError as err:
            gave_up = str(err.cause or err)
        end = RetrieveEnd(request, gave_up)
        if workflow.patched(LOCAL_FINISH_PATCH):
            # two SQL statements: a marker in the history, not a task-queue round trip, while the
            # requester waits for its final C-MOVE response (1-instance move: ~15 ms)
            return await workflow.execute_local_activity(
                names.RETRIEVE_FINISH, end, result_type=RetrieveOutcome, start_to_close_timeout=timedelta(minutes=1)
            )
        return await workflow.execute_activity(
            names.RETRIEVE_FINISH, end, result_type=RetrieveOutcome, start_to_close_timeout=timedelta(minutes=1)
        )

    @staticmethod
    async def _send(request: RetrieveRequest) -> None:
        if 0 < request.instances <= LOCAL_SEND_MAX and workflow.patched(LOCAL_SEND_PATCH):
            await workflow.execute_local_activity(
                names.RETRIEVE_SEND,
                request,
                result_type=int,
                start_to_close_timeout=timedelta(minutes=10),
                retry_policy=SEND_RETRY,
            )
            return
        await workflow.execute_activity(
            names.RETRIEVE_SEND,
            request,
            result_type=int,
            start_to_close_timeout=timedelta(hours=6),
            heartbeat_timeout=HEARTBEAT,
            retry_policy=SEND_RETRY,
        )
