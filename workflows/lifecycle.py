"""Storage lifecycle workflows. LifecycleRunWorkflow (started by the Temporal Schedule `lifecycle`,
or by `dicomflow lifecycle run`) plans what the rules are due for and works on a few studies at a
time, each a LifecycleStudyWorkflow `lifecycle:{tenant}:{StudyInstanceUID}` whose steps are
idempotent: a compression writes new versions and switches each study in one transaction, a
retention deletes what it rejected; a crash anywhere leaves every object readable from a copy whose
checksum matches, and the next run finishes the job without doing any part twice."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy, WorkflowIDReusePolicy

with workflow.unsafe.imports_passed_through():
    from contract import names
    from contract.payloads import LifecycleResult, LifecycleRun, LifecycleStudy

RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=2), backoff_coefficient=2.0, maximum_interval=timedelta(minutes=5), maximum_attempts=20
)


@workflow.defn(name=names.LIFECYCLE_RUN_WORKFLOW)
class LifecycleRunWorkflow:
    @workflow.run
    async def run(self, request: LifecycleRun) -> LifecycleResult:
        as_of = request.as_of or workflow.now().isoformat()
        plan: list[LifecycleStudy] = await workflow.execute_activity(
            names.LIFECYCLE_PLAN,
            LifecycleRun(as_of, request.dry_run, request.concurrency),
            result_type=list[LifecycleStudy],
            start_to_close_timeout=timedelta(minutes=10),
            retry_policy=RETRY,
        )
        result = LifecycleResult(planned=[_described(s) for s in plan][:500])
        if request.dry_run:
            result.studies = len(plan)
            return result
        for start in range(0, len(plan), max(1, request.concurrency)):
            batch = plan[start : start + max(1, request.concurrency)]
            for outcome in await asyncio.gather(*(self._study(study) for study in batch)):
                result.add(outcome)
        return result

    @staticmethod
    async def _study(study: LifecycleStudy) -> LifecycleResult:
        return await workflow.execute_child_workflow(
            names.LIFECYCLE_STUDY_WORKFLOW,
            study,
            id=names.lifecycle_workflow_id(study.tenant, study.study_uid),
            id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE,
            result_type=LifecycleResult,
        )


def _described(study: LifecycleStudy) -> str:
    return f"{study.tenant} {study.study_uid}: " + ", ".join(f"{t.action} ({t.rule})" for t in study.tasks)


@workflow.defn(name=names.LIFECYCLE_STUDY_WORKFLOW)
class LifecycleStudyWorkflow:
    @workflow.run
    async def run(self, study: LifecycleStudy) -> LifecycleResult:
        result = LifecycleResult(studies=1, planned=[_described(study)])
        for task in study.tasks:
            done: LifecycleResult = await workflow.execute_activity(
                names.LIFECYCLE_APPLY,
                args=[study, task],
                result_type=LifecycleResult,
                start_to_close_timeout=timedelta(hours=2),
                heartbeat_timeout=timedelta(seconds=60),
                retry_policy=RETRY,
            )
            done.studies = 0
            result.add(done)
            if task.action == "delete" and done.deleted:
                break  # nothing is left for a later rule
        return result
