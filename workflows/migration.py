"""Migration from a legacy archive over DIMSE Q/R (`dicomflow migrate`).

MigrationWorkflow, id `migrate:{tenant}:{source}:{since}-{until}[:{modalities}]`, walks the date
range newest day first (the priors clinicians ask for first arrive first), one child
MigrationDayWorkflow `migrate:…:{YYYYMMDD}` per day at a time. A day's child finds its studies by
C-FIND (recorded in the index), then moves them `concurrency` at a time by C-MOVE to this archive,
each verified against the source's instance count. Every step reads and writes the progress rows,
so a migration stopped or crashed anywhere resumes where it was: a day searched is not searched
again, a study verified is not pulled again. A study that still fails after its retries is marked
failed and the migration goes on; running the migration again tries those once more.

The Temporal UI shows the counts: search attributes (state, verified instances) and a memo with
found / verified / failed studies, and a `progress` query on both workflows.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy, SearchAttributePair, TypedSearchAttributes, WorkflowIDReusePolicy
from temporalio.exceptions import ActivityError

with workflow.unsafe.imports_passed_through():
    from contract import names
    from contract import search_attributes as sa
    from contract.payloads import (
        MigrationCounts,
        MigrationDay,
        MigrationFailure,
        MigrationRequest,
        MigrationStudy,
        StudyMigrated,
        day_before,
    )

DAYS_BEFORE_CUT = 200  # continue-as-new of the parent: ~4 events a day
STUDIES_BEFORE_CUT = 400  # continue-as-new of a day's child: ~7 events a study
SHORT = timedelta(minutes=2)
# a legacy PACS may be down for a while, or refuse while it is busy: back off, then give the study up
# (recorded as failed; the migration goes on, and running it again tries it once more)
MOVE_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=5), backoff_coefficient=2.0, maximum_interval=timedelta(minutes=2), maximum_attempts=6
)
STEP_RETRY = RetryPolicy(initial_interval=timedelta(seconds=2), backoff_coefficient=2.0, maximum_interval=timedelta(minutes=1))
FIND_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=5), backoff_coefficient=2.0, maximum_interval=timedelta(minutes=5), maximum_attempts=12
)


def _memo(counts: MigrationCounts, day: str) -> dict[str, object]:
    return {
        "day": day,
        "found": counts.found,
        "verified": counts.verified,
        "failed": counts.failed,
        "instances": counts.instances,
        "capped_days": counts.capped_days,
    }


def _show(counts: MigrationCounts, state: str, day: str) -> None:
    workflow.upsert_search_attributes([sa.STATE.value_set(state), sa.INSTANCE_COUNT.value_set(counts.instances)])
    workflow.upsert_memo(_memo(counts, day))


@workflow.defn(name=names.MIGRATION_WORKFLOW)
class MigrationWorkflow:
    def __init__(self) -> None:
        self.counts = MigrationCounts()
        self.day = ""

    @workflow.query(name="progress")
    def progress(self) -> dict[str, object]:
        return _memo(self.counts, self.day)

    @workflow.run
    async def run(self, request: MigrationRequest) -> MigrationCounts:
        self.counts = request.counts
        if not request.next_day:
            await workflow.execute_activity(
                names.MIGRATE_BEGIN, request, result_type=int, start_to_close_timeout=SHORT, retry_policy=STEP_RETRY
            )
        self.day = request.next_day or request.until
        for _ in range(DAYS_BEFORE_CUT):
            if self.day < request.since:
                return await self._finish(request)
            _show(self.counts, "migrating", self.day)
            self.counts.add(await self._migrate_day(request, self.day))
            self.day = day_before(self.day)
        request.next_day, request.counts = self.day, self.counts
        workflow.continue_as_new(request)

    @staticmethod
    async def _migrate_day(request: MigrationRequest, day: str) -> MigrationCounts:
        return await workflow.execute_child_workflow(
            names.MIGRATION_DAY_WORKFLOW,
            MigrationDay(request, day),
            id=names.migration_day_workflow_id(request.key, day),
            id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE,
            search_attributes=TypedSearchAttributes([SearchAttributePair(sa.TENANT, request.tenant)]),
            result_type=MigrationCounts,
        )

    async def _finish(self, request: MigrationRequest) -> MigrationCounts:
        state: str = await workflow.execute_activity(
            names.MIGRATE_FINISH, request, result_type=str, start_to_close_timeout=SHORT, retry_policy=STEP_RETRY
        )
        _show(self.counts, state, "")
        return self.counts


@workflow.defn(name=names.MIGRATION_DAY_WORKFLOW)
class MigrationDayWorkflow:
    def __init__(self) -> None:
        self.counts = MigrationCounts()

    @workflow.query(name="progress")
    def progress(self) -> dict[str, object]:
        return _memo(self.counts, "")

    @workflow.run
    async def run(self, day: MigrationDay) -> MigrationCounts:
        self.counts = day.counts
        if not day.searched:
            found: MigrationCounts = await workflow.execute_activity(
                names.MIGRATE_FIND_DAY,
                day,
                result_type=MigrationCounts,
                start_to_close_timeout=timedelta(minutes=30),
                heartbeat_timeout=timedelta(minutes=2),
                retry_policy=FIND_RETRY,
            )
            self.counts.add(found)
        _show(self.counts, "moving", day.day)
        moved = 0
        while moved < STUDIES_BEFORE_CUT:
            batch: list[MigrationStudy] = await workflow.execute_activity(
                names.MIGRATE_NEXT, day, result_type=list[MigrationStudy], start_to_close_timeout=SHORT, retry_policy=STEP_RETRY
            )
            if not batch:
                _show(self.counts, "done", day.day)
                return self.counts
            await self._move_all(batch, max(1, day.request.concurrency))
            moved += len(batch)
            _show(self.counts, "moving", day.day)
        workflow.continue_as_new(MigrationDay(day.request, day.day, searched=True, counts=self.counts))

    async def _move_all(self, batch: list[MigrationStudy], lanes: int) -> None:
        """`lanes` studies moving at once, each lane taking the next study as its last one ends."""
        queue = list(reversed(batch))

        async def lane() -> None:
            while queue:
                await self._move(queue.pop())

        await asyncio.gather(*(lane() for _ in range(min(lanes, len(batch)))))

    async def _move(self, study: MigrationStudy) -> None:
        try:
            done: StudyMigrated = await workflow.execute_activity(
                names.MIGRATE_MOVE,
                study,
                result_type=StudyMigrated,
                start_to_close_timeout=timedelta(hours=4),
                heartbeat_timeout=timedelta(seconds=60),
                retry_policy=MOVE_RETRY,
            )
        except ActivityError as err:
            reason = str(err.cause or err)
            await workflow.execute_activity(
                names.MIGRATE_FAIL, MigrationFailure(study, reason), start_to_close_timeout=SHORT, retry_policy=STEP_RETRY
            )
            self.counts.failed += 1
            return
        self.counts.verified += 1
        self.counts.instances += done.instances
