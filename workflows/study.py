"""StudyWorkflow, id `study:{tenant}:{StudyInstanceUID}`: carries a study from receipt to ready.

Receivers signal-with-start it with counters per batch (receiving/signaller.py). A batch the
receiver already saw quiet for `stable_seconds` comes *settled* and is processed at once; otherwise
the workflow waits until the study is quiet. Then it runs store -> verify -> commit -> transcode ->
index -> route -> JSON-generate as one activity (activities/study_pass.py), a local activity when
the pass is small, retried with backoff. Instances that arrive meanwhile are taken by another pass;
the history is cut by continue-as-new well before Temporal's limits.

A one-instance study settled on arrival is 8 history events and one workflow task. Runs started
before StudyParams.version 2 replay through `workflow.patched` (tests/unit/test_study_workflow_replay.py).
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import NoReturn

from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from contract import names
    from contract import search_attributes as sa
    from contract.payloads import InstancesArrived, StepResult, StudyOutcome, StudyParams, StudyPass, StudyRef

SIGNAL = names.STUDY_SIGNAL
# workflows started before local steps replay with every step as an activity
LOCAL_STEPS_PATCH = "local-sql-steps"
# ... and those started before forwarding replay without the routing step
ROUTING_PATCH = "route-after-processing"
# forwards need the committed, indexed objects, not the series documents: they start before the
# documents are written (bench/README.md, forwarding: 1.4-2.3 s sooner on a 520-instance study)
ROUTE_EARLY_PATCH = "route-before-documents"
# one activity for the whole pass (activities/study_pass.py): about 20 history events fewer per study
ONE_PASS_PATCH = "one-activity-pass"
# a pass over a few instances runs as a local activity: a marker in the history, not three events
# and a task-queue round trip; with a settled signal a one-instance study is one workflow task
LOCAL_PASS_PATCH = "local-small-pass"
LOCAL_PASS_LIMIT = 32  # instances in the pass; larger passes keep the activity's heartbeat and UI row
HISTORY_LIMIT = 3000  # events; the SDK suggests continue-as-new near 4,096 and refuses at 50k/10k signals

STEP_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=60),
)


workflow_id = names.study_workflow_id


@workflow.defn(name=names.STUDY_WORKFLOW)
class StudyWorkflow:
    def __init__(self) -> None:
        self.arrivals = 0
        self.pending = 0
        self.total = 0
        self.failed = 0
        self.deleted = 0
        self.modality: str | None = None
        self.state = "receiving"
        self.routed = False
        self.settled = False  # the latest arrival's sender saw the study quiet already
        self.version = 1
        self._published: tuple | None = None

    @workflow.signal(name=SIGNAL)
    def instances_arrived(self, batch: InstancesArrived) -> None:
        self.arrivals += 1
        self.pending += batch.count
        self.deleted += batch.deleted
        self.modality = self.modality or batch.modality
        self.settled = batch.settled

    @workflow.signal(name=names.PROCEDURE_STEP_SIGNAL)
    def procedure_step(self, status: str) -> None:
        """The modality reported the study's performed procedure step (MPPS)."""
        workflow.upsert_search_attributes([sa.PROCEDURE_STEP.value_set(status[:32])])

    @workflow.query(name="state")
    def current_state(self) -> dict:
        return {"state": self.state, "pending": self.pending, "total": self.total, "failed": self.failed, "deleted": self.deleted}

    @workflow.run
    async def run(self, params: StudyParams) -> StudyOutcome:
        self.version = params.version
        self.pending += params.pending
        self.total = params.total
        self.failed += params.failed
        self.deleted += params.deleted
        self.modality = self.modality or params.modality
        given = workflow.info().typed_search_attributes  # as the starter set them
        self._published = (given.get(sa.STATE), given.get(sa.INSTANCE_COUNT), given.get(sa.MODALITY))
        ref = StudyRef(params.tenant, params.study_uid)
        steps: list[StepResult] = []
        while True:
            if not await self._wait_until_quiet(params.stable_seconds):
                self._continue_as_new(params)  # arrivals never paused: cut before the history outgrows its limit
            in_pass = self.pending
            self.total += self.pending
            self.pending = 0
            steps = await self._process(ref, in_pass)
            if self.pending == 0:
                break
            if self._cut_due():
                self._continue_as_new(params)
        if not self.routed and self._in_effect(ROUTING_PATCH):
            await self._route(ref)
        self.state = "failed" if self.failed else "complete"
        self._publish()
        return StudyOutcome(params.tenant, params.study_uid, self.total, self.failed, self.state, steps, self.deleted)

    async def _wait_until_quiet(self, stable_seconds: float) -> bool:
        """True once no instance arrived for `stable_seconds`; False when the history must be cut first."""
        self.state = "receiving"
        self._publish()
        while not self.settled:
            seen = self.arrivals
            try:
                await workflow.wait_condition(lambda: self.arrivals != seen, timeout=timedelta(seconds=stable_seconds))  # noqa: B023 - awaited in this iteration
            except asyncio.TimeoutError:
                return True
            if workflow.info().get_current_history_length() > HISTORY_LIMIT:
                return False
        return True

    def _in_effect(self, patch: str) -> bool:
        """Version 1 runs ask Temporal (a marker where the patch is new); in version 2 every patch is."""
        return self.version >= 2 or workflow.patched(patch)

    @staticmethod
    def _cut_due() -> bool:
        info = workflow.info()
        return info.is_continue_as_new_suggested() or info.get_current_history_length() > HISTORY_LIMIT

    def _continue_as_new(self, params: StudyParams) -> NoReturn:
        workflow.continue_as_new(
            StudyParams(
                params.tenant,
                params.study_uid,
                params.stable_seconds,
                self.pending,
                self.total,
                self.modality,
                self.failed,
                self.deleted,
                params.version,
            )
        )

    async def _process(self, ref: StudyRef, in_pass: int) -> list[StepResult]:
        self.state = "processing"
        if self._in_effect(ONE_PASS_PATCH):
            # the `state` query says "processing"; the search attribute goes from receiving to the
            # outcome: each upsert is an event and a visibility write, and a pass is short
            return await self._one_pass(ref, in_pass)
        self._publish()
        results = []
        local_steps = names.LOCAL_STUDY_STEPS if self._in_effect(LOCAL_STEPS_PATCH) else ()
        for step in names.STUDY_STEPS:
            if step == names.GENERATE_JSON and self._in_effect(ROUTE_EARLY_PATCH):
                await self._route(ref)
                self.routed = True
            self.state = step  # the `state` query names the step; the search attribute stays "processing"
            result: StepResult = await (self._local_step(step, ref) if step in local_steps else self._step(step, ref))
            if step == names.VERIFY:
                self.failed += result.failed
            results.append(result)
        return results

    async def _one_pass(self, ref: StudyRef, in_pass: int) -> list[StepResult]:
        done: StudyPass
        if in_pass <= LOCAL_PASS_LIMIT and self._in_effect(LOCAL_PASS_PATCH):
            done = await workflow.execute_local_activity(
                names.PROCESS_STUDY,
                ref,
                result_type=StudyPass,
                start_to_close_timeout=timedelta(minutes=10),
                retry_policy=STEP_RETRY,
            )
        else:
            done = await workflow.execute_activity(
                names.PROCESS_STUDY,
                ref,
                result_type=StudyPass,
                start_to_close_timeout=timedelta(hours=2),
                heartbeat_timeout=timedelta(seconds=30),
                retry_policy=STEP_RETRY,
            )
        if done.failed_in_study is None:
            self.failed += sum(step.failed for step in done.steps if step.step == names.VERIFY)
        else:  # the durable count: a pass run twice (its first result lost) reports its failures once
            self.failed = done.failed_in_study
        self.routed = True
        return done.steps

    @staticmethod
    async def _route(ref: StudyRef) -> list[str]:
        """Start the forwards the rules ask for (each its own workflow); a study no rule names costs
        one local activity marker."""
        return await workflow.execute_local_activity(
            names.ROUTE_STUDY, ref, result_type=list[str], start_to_close_timeout=timedelta(minutes=2), retry_policy=STEP_RETRY
        )

    @staticmethod
    async def _step(step: str, ref: StudyRef) -> StepResult:
        return await workflow.execute_activity(
            step,
            ref,
            result_type=StepResult,
            start_to_close_timeout=timedelta(minutes=30),
            heartbeat_timeout=timedelta(seconds=30),
            retry_policy=STEP_RETRY,
        )

    @staticmethod
    async def _local_step(step: str, ref: StudyRef) -> StepResult:
        """A step of one or two SQL statements runs as a local activity: a marker in the history
        (the UI lists it as a local activity), not three events and a task-queue round trip."""
        return await workflow.execute_local_activity(
            step,
            ref,
            result_type=StepResult,
            start_to_close_timeout=timedelta(minutes=5),
            retry_policy=STEP_RETRY,
        )

    def _publish(self) -> None:
        """Search attributes change only when their values do: each upsert is a visibility write."""
        current = (self.state, self.total + self.pending, self.modality)
        if current == self._published:
            return
        self._published = current
        workflow.upsert_search_attributes(
            [
                sa.STATE.value_set(self.state),
                sa.INSTANCE_COUNT.value_set(self.total + self.pending),
                *([sa.MODALITY.value_set(self.modality)] if self.modality else []),
            ]
        )
