"""How a workflow of the contract is started or told of new work, for every starter alike (the
study workflow's routing step, the receiving side): one call, so the id, the signal and the
conflict rules cannot drift apart between them."""

from __future__ import annotations

from datetime import timedelta

from temporalio.client import (
    Client,
    Schedule,
    ScheduleActionStartWorkflow,
    ScheduleAlreadyRunningError,
    ScheduleIntervalSpec,
    ScheduleOverlapPolicy,
    SchedulePolicy,
    ScheduleSpec,
    ScheduleUpdate,
)
from temporalio.common import SearchAttributePair, TypedSearchAttributes, WorkflowIDReusePolicy
from temporalio.exceptions import WorkflowAlreadyStartedError

from contract import names
from contract import search_attributes as sa
from contract.payloads import (
    ExpiryRequest,
    ForwardRequest,
    InstancesArrived,
    LifecycleRun,
    MigrationRequest,
    StudyParams,
    UpdateRequest,
)


async def tell_forward(client: Client, task_queue: str, request: ForwardRequest) -> None:
    """Signal the study's forward for this rule that there may be more to send; start it if it is
    not running (signal-with-start: a forward that is sending takes the signal as another round)."""
    await client.start_workflow(
        names.FORWARD_WORKFLOW,
        request,
        id=names.forward_workflow_id(request.tenant, request.rule, request.study_uid),
        task_queue=task_queue,
        start_signal=names.FORWARD_SIGNAL,
    )


def rejection_expiry_schedule(task_queue: str, every_seconds: float) -> Schedule:
    """The Schedule that starts a RejectionExpiryWorkflow every `every_seconds`: one at a time, and
    a run asked for while one is going follows it (a 113039 note must not wait a whole interval)."""
    return Schedule(
        action=ScheduleActionStartWorkflow(
            names.REJECTION_EXPIRY_WORKFLOW, ExpiryRequest(), id=names.REJECTION_EXPIRY_SCHEDULE, task_queue=task_queue
        ),
        spec=ScheduleSpec(intervals=[ScheduleIntervalSpec(every=timedelta(seconds=every_seconds))]),
        policy=SchedulePolicy(overlap=ScheduleOverlapPolicy.BUFFER_ONE),
    )


async def ensure_rejection_expiry(client: Client, task_queue: str, every_seconds: float) -> None:
    await ensure_schedule(client, names.REJECTION_EXPIRY_SCHEDULE, rejection_expiry_schedule(task_queue, every_seconds))


def lifecycle_schedule(task_queue: str, every_seconds: float, concurrency: int) -> Schedule:
    """The Schedule that starts a LifecycleRunWorkflow every `every_seconds` (a day by default), one at a time."""
    return Schedule(
        action=ScheduleActionStartWorkflow(
            names.LIFECYCLE_RUN_WORKFLOW,
            LifecycleRun(concurrency=concurrency),
            id=names.LIFECYCLE_SCHEDULE,
            task_queue=task_queue,
        ),
        spec=ScheduleSpec(intervals=[ScheduleIntervalSpec(every=timedelta(seconds=every_seconds))]),
        policy=SchedulePolicy(overlap=ScheduleOverlapPolicy.SKIP),
    )


async def ensure_schedule(client: Client, schedule_id: str, schedule: Schedule) -> None:
    """Create a Schedule, or bring an existing one to these settings."""
    try:
        await client.create_schedule(schedule_id, schedule)
    except ScheduleAlreadyRunningError:
        await client.get_schedule_handle(schedule_id).update(lambda _: ScheduleUpdate(schedule=schedule))


async def expire_rejections_now(client: Client) -> None:
    """A run of the rejection expiry now (after the one going, if any)."""
    await client.get_schedule_handle(names.REJECTION_EXPIRY_SCHEDULE).trigger(overlap=ScheduleOverlapPolicy.BUFFER_ONE)


STUDY_WORKFLOW_VERSION = 2  # StudyParams.version of every study workflow started


async def signal_study(
    client: Client,
    task_queue: str,
    tenant: str,
    study_uid: str,
    count: int,
    modality: str | None,
    stable_seconds: float,
    deleted: int = 0,
    settled: bool = False,
) -> None:
    """Signal-with-start the study's workflow; `settled` lets it process at once (InstancesArrived)."""
    await client.start_workflow(
        names.STUDY_WORKFLOW,
        StudyParams(tenant, study_uid, stable_seconds, version=STUDY_WORKFLOW_VERSION),
        id=names.study_workflow_id(tenant, study_uid),
        task_queue=task_queue,
        start_signal=names.STUDY_SIGNAL,
        start_signal_args=[InstancesArrived(count, modality, deleted, settled)],
        id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE,
        search_attributes=TypedSearchAttributes(
            [
                SearchAttributePair(sa.TENANT, tenant),
                SearchAttributePair(sa.STATE, "receiving"),
                SearchAttributePair(sa.INSTANCE_COUNT, count),
                *([SearchAttributePair(sa.MODALITY, modality)] if modality else []),
            ]
        ),
    )


async def start_update(client: Client, task_queue: str, request: UpdateRequest) -> str:
    """Start the update's workflow; its id. An operation id is used once, so a second start of the
    same one (a message redelivered) is refused by Temporal rather than applied twice."""
    workflow_id = names.update_workflow_id(request.tenant, request.operation_id)
    await client.start_workflow(
        names.UPDATE_WORKFLOW,
        request,
        id=workflow_id,
        task_queue=task_queue,
        id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
        search_attributes=TypedSearchAttributes([SearchAttributePair(sa.TENANT, request.tenant)]),
    )
    return workflow_id


async def start_migration(client: Client, task_queue: str, request: MigrationRequest) -> bool:
    """Start the migration's workflow; False when it is running already (the same command names the
    same migration: a second start while it runs is refused, one after it stopped resumes it)."""
    try:
        await client.start_workflow(
            names.MIGRATION_WORKFLOW,
            request,
            id=names.migration_workflow_id(request.key),
            task_queue=task_queue,
            id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE,
            search_attributes=TypedSearchAttributes(
                [SearchAttributePair(sa.TENANT, request.tenant), SearchAttributePair(sa.STATE, "migrating")]
            ),
        )
    except WorkflowAlreadyStartedError:
        return False
    return True
