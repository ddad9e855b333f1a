"""Forwarding: the study workflow's last step starts one forward per matching rule. A forward is a
retrieve the archive asks of itself: its instances are listed in the index like a C-MOVE's and a
RetrieveWorkflow with the id `forward:{tenant}:{rule}:{StudyInstanceUID}` sends them over the
same C-STORE SCU side, resuming at the first unacknowledged instance after any crash."""

from __future__ import annotations

import logging
import uuid

from temporalio import activity
from temporalio.common import WorkflowIDConflictPolicy

from activities.context import ActivityContext
from archive.index import retrieves
from archive.query.retrieve import MAX_INSTANCES
from archive.routing.rules import ForwardRule, study_instances, study_matches
from contract import names
from contract.payloads import RetrieveRequest, StudyRef

log = logging.getLogger("dicomflow.routing")


class RoutingActivities:
    def __init__(self, ctx: ActivityContext) -> None:
        self.ctx = ctx

    def all(self) -> list:
        return [self.route]

    @activity.defn(name=names.ROUTE_STUDY)
    async def route(self, ref: StudyRef) -> list[str]:
        """The rules whose forward was started (or is already running) for this study."""
        started = []
        for rule in self.ctx.settings.forward_rules:
            if rule.applies_to(ref.tenant) and await study_matches(self.ctx.pool, rule, ref.tenant, ref.study_uid):
                await self._forward(rule, ref)
                started.append(rule.name)
        return started

    async def _forward(self, rule: ForwardRule, ref: StudyRef) -> None:
        workflow_id = names.forward_workflow_id(ref.tenant, rule.name, ref.study_uid)
        retrieve_id = uuid.uuid4().hex
        sql, params = study_instances(ref.tenant, ref.study_uid)
        total = await retrieves.create(
            self.ctx.pool, retrieve_id, ref.tenant, f"forward:{rule.name}", rule.to.ae, sql, params, MAX_INSTANCES
        )
        request = RetrieveRequest(ref.tenant, retrieve_id, rule.to.ae, "", 0, total)
        # a study processed again while its forward still runs joins that run (it sends the study as listed)
        await activity.client().start_workflow(
            names.RETRIEVE_WORKFLOW,
            request,
            id=workflow_id,
            task_queue=self.ctx.settings.temporal_task_queue,
            id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        )
        log.info("forward %s: %d instances of a study to %s (%s)", rule.name, total, rule.to.ae, workflow_id)
