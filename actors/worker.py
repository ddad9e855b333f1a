"""The Temporal worker host: workflows and activities for this node, plus the outbox reconciler and
the periodic orphan sweep."""

from __future__ import annotations

import asyncio
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import ray
from temporalio.client import Client
from temporalio.worker import UnsandboxedWorkflowRunner, Worker

import dimse
from activities.commitment_steps import CommitmentActivities
from activities.context import ActivityContext
from activities.lifecycle_steps import LifecycleActivities
from activities.migration_steps import MigrationActivities
from activities.rejection_steps import RejectionActivities
from activities.retrieve_steps import RetrieveActivities
from activities.routing_steps import RoutingActivities
from activities.stow_forward import StowForwardActivities
from activities.study_pass import StudyPassActivity
from activities.study_steps import StudyActivities
from activities.tenant_copy import TenantCopyActivities
from activities.update_steps import UpdateActivities
from actors.loop_thread import LoopThread
from actors.worker_ingest import WorkerIngest
from archive.config.settings import Settings
from archive.priority import normal_priority
from archive.services.removals import drain_forever
from archive.services.sweeper import sweep_forever
from contract import names
from contract.starts import ensure_rejection_expiry, ensure_schedule, lifecycle_schedule
from receiving.reconciler import reconcile_forever
from workflows.commitment import StorageCommitmentWorkflow
from workflows.forward import ForwardWorkflow
from workflows.lifecycle import LifecycleRunWorkflow, LifecycleStudyWorkflow
from workflows.migration import MigrationDayWorkflow, MigrationWorkflow
from workflows.rejection_expiry import RejectionExpiryWorkflow
from workflows.retrieve import RetrieveWorkflow
from workflows.study import StudyWorkflow
from workflows.update import UpdateWorkflow

log = logging.getLogger("dicomflow.worker")

WORKFLOW_CACHE = 20_000  # studies in flight kept in memory (a few KB each) instead of replayed


async def run_worker(settings: Settings, stop: asyncio.Event) -> None:
    # the client is made here, inside the process: it cannot be pickled into an actor
    client = await Client.connect(settings.effective_temporal_address(), namespace=settings.temporal.namespace)
    ctx = await ActivityContext.open(settings)
    receipts = WorkerIngest(settings)  # copies into another tenant are received through it
    steps, routing = StudyActivities(ctx), RoutingActivities(ctx)
    activities = [
        *steps.all(),
        *StudyPassActivity(steps, routing).all(),
        *CommitmentActivities(ctx).all(),
        *RetrieveActivities(ctx).all(),
        *routing.all(),
        *TenantCopyActivities(ctx, receipts).all(),
        *StowForwardActivities(ctx).all(),
        *RejectionActivities(ctx).all(),
        *UpdateActivities(ctx).all(),
        *LifecycleActivities(ctx).all(),
        *MigrationActivities(ctx).all(),
    ]
    await _ensure_schedules(client, settings)
    reconciler = asyncio.create_task(reconcile_forever(client, ctx.pool, settings))
    sweeper = asyncio.create_task(sweep_forever(ctx.blobs, ctx.pool, settings.ingest))
    removals = asyncio.create_task(drain_forever(ctx.pool, ctx.blobs))  # what a killed process left queued
    try:
        async with Worker(
            client,
            task_queue=settings.temporal.task_queue,
            workflows=[
                StudyWorkflow,
                StorageCommitmentWorkflow,
                RetrieveWorkflow,
                ForwardWorkflow,
                RejectionExpiryWorkflow,
                UpdateWorkflow,
                LifecycleRunWorkflow,
                LifecycleStudyWorkflow,
                MigrationWorkflow,
                MigrationDayWorkflow,
            ],
            activities=activities,
            activity_executor=ThreadPoolExecutor(max_workers=4),
            max_concurrent_activities=8,
            # Profiled at 2,000 studies in flight: re-importing the workflow module into a fresh
            # sandbox for every workflow run, and replaying histories evicted from a too-small
            # cache, took most of this process's CPU. The workflows stay sandbox-clean: the test
            # suite replays real histories through the sandboxed Replayer.
            workflow_runner=UnsandboxedWorkflowRunner(),
            max_cached_workflows=WORKFLOW_CACHE,
        ):
            await stop.wait()
    finally:
        reconciler.cancel()
        sweeper.cancel()
        removals.cancel()
        await receipts.close()
        await ctx.close()


async def _ensure_schedules(client: Client, settings: Settings) -> None:
    """The periodic workflows this archive runs; every worker makes sure of them (the first creates)."""
    try:
        await ensure_rejection_expiry(client, settings.temporal.task_queue, settings.lifecycle.rejection_expiry_interval_seconds)
        schedule = lifecycle_schedule(
            settings.temporal.task_queue, settings.lifecycle.interval_seconds, settings.lifecycle.concurrency
        )
        await ensure_schedule(client, names.LIFECYCLE_SCHEDULE, schedule)
    except Exception:  # noqa: BLE001 - e.g. two workers creating it at once; the next start tries again
        log.warning("could not create or update the archive's schedules", exc_info=True)


class WorkerHost:
    def __init__(self, settings: Settings) -> None:
        self.loop = LoopThread("dicomflow-worker-loop")
        self._stop = asyncio.Event()
        self.future = self.loop.submit(self._run(settings))

    async def _run(self, settings: Settings) -> None:
        while not self._stop.is_set():
            try:
                await run_worker(settings, self._stop)
            except Exception:  # noqa: BLE001 - e.g. Temporal restarting: try again shortly
                log.exception("worker stopped; restarting in 2 s")
                await asyncio.sleep(2)

    def stop(self) -> None:
        self.loop.loop.call_soon_threadsafe(self._stop.set)
        try:
            self.future.result(timeout=30)
        finally:
            self.loop.stop()


@ray.remote(num_cpus=0, max_restarts=-1)
class WorkflowWorkerActor:
    def __init__(self, settings_data: dict[str, Any]) -> None:
        normal_priority()
        dimse.install()  # C-MOVE sub-operations and N-EVENT-REPORTs go out from here
        self.host = WorkerHost(Settings.model_validate(settings_data))

    def ready(self) -> int:
        return os.getpid()

    def stop(self) -> None:
        self.host.stop()
