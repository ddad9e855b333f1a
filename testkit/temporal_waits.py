"""Reading workflows back from the real Temporal server."""

from __future__ import annotations

import asyncio
import json
import time

from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowExecutionStatus

from archive.config.settings import Settings
from contract.payloads import StudyOutcome


async def client_for(settings: Settings) -> Client:
    return await Client.connect(settings.effective_temporal_address(), namespace=settings.temporal.namespace)


async def wait_completed(settings: Settings, workflow_ids: list[str], timeout: float = 180) -> dict[str, WorkflowExecutionStatus]:
    """Wait until every workflow's latest run has closed; return each one's status."""
    client = await client_for(settings)
    deadline = time.monotonic() + timeout
    statuses: dict[str, WorkflowExecutionStatus] = {}
    while time.monotonic() < deadline:
        for wid in workflow_ids:
            if statuses.get(wid) not in (None, WorkflowExecutionStatus.RUNNING):
                continue
            try:
                statuses[wid] = (await client.get_workflow_handle(wid).describe()).status
            except Exception:  # noqa: BLE001 - not started yet
                statuses[wid] = None
        if all(s not in (None, WorkflowExecutionStatus.RUNNING) for s in statuses.values()) and len(statuses) == len(
            workflow_ids
        ):
            return statuses
        await asyncio.sleep(1)
    return statuses


LOCAL_ACTIVITY_MARKER = "core_local_activity"


async def activity_types(settings: Settings, workflow_id: str) -> list[str]:
    """Activity types in the latest run's history, in order: scheduled on the task queue, or run
    as local activities (a marker whose data names the type)."""
    client = await client_for(settings)
    history = await client.get_workflow_handle(workflow_id).fetch_history()
    types = []
    for e in history.events:
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
            types.append(e.activity_task_scheduled_event_attributes.activity_type.name)
        elif (
            e.event_type == EventType.EVENT_TYPE_MARKER_RECORDED
            and e.marker_recorded_event_attributes.marker_name == LOCAL_ACTIVITY_MARKER
        ):
            data = e.marker_recorded_event_attributes.details["data"].payloads[0].data
            types.append(json.loads(data)["activity_type"])
    return types


async def list_ids(settings: Settings, query: str) -> list[str]:
    client = await client_for(settings)
    return [w.id async for w in client.list_workflows(query)]


async def study_steps(settings: Settings, workflow_id: str) -> list[str]:
    """The steps a finished study workflow's last pass ran, from its result (StudyOutcome)."""
    client = await client_for(settings)
    outcome = await client.get_workflow_handle(workflow_id, result_type=StudyOutcome).result()
    return [step.step for step in outcome.steps]
