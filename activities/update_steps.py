"""The steps of an UpdateWorkflow (workflows/update.py): which studies, each study's new versions
(rewritten off the event loop, a few at a time, each committed under a new key before the index
switches to it in one transaction), and the end: patient rows, worklist and performed steps
follow, the operation's status and the audit trail record it."""

from __future__ import annotations

import asyncio

from temporalio import activity

from activities.context import ActivityContext
from archive.audit import AuditAction, AuditEvent, Outcome, record_now
from archive.blobstore.layout import instance_key, new_write_id
from archive.corrections.changes import Changes
from archive.corrections.rewrite import rewrite
from archive.index import updates
from archive.index.updates import StoredObject
from archive.index.versions import NewVersion
from archive.services.removals import remove_queued
from contract import names
from contract.payloads import UpdateOutcome, UpdateRequest, UpdateStudy
from contract.starts import signal_study

REWRITES_AT_ONCE = 4


class UpdateActivities:
    def __init__(self, ctx: ActivityContext) -> None:
        self.ctx = ctx

    def all(self) -> list:
        return [self.list_studies, self.update_study, self.finish]

    @activity.defn(name=names.UPDATE_LIST)
    async def list_studies(self, request: UpdateRequest) -> list[str]:
        pool = self.ctx.pool
        if request.kind == "bulk":
            studies = await updates.held_studies(pool, request.tenant, request.study_uids)
        else:
            studies = await updates.studies_of_patient(pool, request.tenant, request.patient_id)
        await updates.set_total(pool, request.operation_id, len(studies))
        return studies

    @activity.defn(name=names.UPDATE_STUDY)
    async def update_study(self, step: UpdateStudy) -> int:
        request, study_uid = step.request, step.study_uid
        pool = self.ctx.pool
        if await updates.applied(pool, request.operation_id, study_uid):
            return 0  # a retry after the switch committed
        changes = Changes.of(request.changes)
        objects = await updates.study_objects(pool, request.tenant, study_uid)
        gate = asyncio.Semaphore(REWRITES_AT_ONCE)
        made = await asyncio.gather(*(self._new_version(request.tenant, study_uid, o, changes, gate) for o in objects))
        versions = [version for version, _ in made]
        before = made[0][1] if made else {}
        gone = await updates.switch_study(pool, request.operation_id, request.tenant, study_uid, changes.values, versions, before)
        await remove_queued(self.ctx.pool, self.ctx.blobs, gone, "a superseded version", self.ctx.in_background)
        settings = self.ctx.settings
        # the study workflow rewrites the documents it owns (series metadata) from the new versions
        await signal_study(
            activity.client(), settings.temporal.task_queue, request.tenant, study_uid, 0, None, settings.ingest.stable_seconds
        )
        return len(versions)

    async def _new_version(
        self, tenant: str, study_uid: str, stored: StoredObject, changes: Changes, gate: asyncio.Semaphore
    ) -> tuple[NewVersion, dict[str, str | None]]:
        async with gate:
            activity.heartbeat(stored.sop_uid)
            key = instance_key(tenant, stored.study_date, study_uid, stored.series_uid, stored.sop_uid, new_write_id())
            made = await self.ctx.in_background(rewrite, self.ctx.blobs, stored.blob_key, changes)
            await self.ctx.in_background(self.ctx.blobs.commit, made.staged, key)
        return NewVersion(stored.sop_uid, stored.blob_key, key, made.staged.sha256, made.staged.size), made.before

    @activity.defn(name=names.UPDATE_FINISH)
    async def finish(self, request: UpdateRequest, outcome: UpdateOutcome) -> UpdateOutcome:
        pool = self.ctx.pool
        if request.kind != "bulk" and outcome.status == "succeeded":
            await updates.reconcile_patient(pool, request.tenant, request.patient_id, request.changes)
        await updates.finish(pool, request.operation_id, outcome.status, outcome.error or None)
        await record_now(pool, _audit(request, outcome))
        return outcome


def _audit(request: UpdateRequest, outcome: UpdateOutcome) -> AuditEvent:
    return AuditEvent(
        action=AuditAction.PATIENT_RECORD,
        outcome=Outcome.SUCCESS if outcome.status == "succeeded" else Outcome.SERIOUS_FAILURE,
        subject=f"update:{request.operation_id}",
        method="none",
        source="workflow",
        tenant=request.tenant,
        detail={
            "kind": request.kind,
            "operation": request.operation_id,
            "changed": sorted(request.changes),
            "patient_id": request.patient_id or None,
            "studies": outcome.studies,
            "instances": outcome.instances,
            "error": outcome.error or None,
        },
    )
