"""Forwarding: the study workflow's last step signals one ForwardWorkflow per matching rule
(`forward:{tenant}:{rule}:{StudyInstanceUID}`, started if it is not running), and that workflow
lists, each round, what its destination has not acknowledged yet: a retrieve in the index that
the C-MOVE sending step sends, resuming at the first unacknowledged instance after any crash."""

from __future__ import annotations

import logging
import uuid

from temporalio import activity

from activities.context import ActivityContext
from archive.audit import AuditAction, AuditEvent, Outcome, record_now
from archive.index import retrieves
from archive.query.retrieve import MAX_INSTANCES
from archive.routing.registry import rule_in_force, rules_in_force
from archive.routing.rules import ForwardRule, owed_instances, requester, study_matches
from contract import names
from contract.payloads import ForwardRequest, ForwardRound, RetrieveOutcome, RetrieveRequest, StudyRef
from contract.starts import tell_forward

log = logging.getLogger("dicomflow.routing")


class RoutingActivities:
    def __init__(self, ctx: ActivityContext) -> None:
        self.ctx = ctx

    def all(self) -> list:
        return [self.route, self.list_owed, self.audit, self.withdraw]

    @activity.defn(name=names.FORWARD_AUDIT)
    async def audit(self, sent: ForwardRound) -> None:
        """PS3.15 DICOM Instances Transferred: the archive sent them on its own account."""
        request, outcome = sent.request, sent.outcome
        failed = outcome.failed > 0
        await record_now(
            self.ctx.pool,
            AuditEvent(
                action=AuditAction.RETRIEVE,
                outcome=Outcome.MINOR_FAILURE if failed else Outcome.SUCCESS,
                subject=requester(request.rule),
                method="none",
                source="forward",
                tenant=request.tenant,
                study_uid=request.study_uid,
                detail={
                    "destination": request.destination_ae,
                    "rule": request.rule,
                    "instances": outcome.completed,
                    "warning": outcome.warning,
                    "failed": outcome.failed,
                    **({"cancelled": True} if sent.cancelled else {}),
                },
            ),
        )

    @activity.defn(name=names.ROUTE_STUDY)
    async def route(self, ref: StudyRef) -> list[str]:
        """The rules whose forward was told about this study (started, or signalled while it runs)."""
        told = []
        for rule in await rules_in_force(self.ctx.settings.routing, self.ctx.pool):
            if rule.applies_to(ref.tenant) and await study_matches(self.ctx.pool, rule, ref.tenant, ref.study_uid):
                await self._tell(rule, ref)
                told.append(rule.name)
        return told

    async def _tell(self, rule: ForwardRule, ref: StudyRef) -> None:
        request = ForwardRequest(ref.tenant, rule.name, ref.study_uid, rule.to.destination, rule.deidentify or "", rule.to.kind)
        await tell_forward(activity.client(), self.ctx.settings.temporal.task_queue, request)

    @activity.defn(name=names.FORWARD_WITHDRAW)
    async def withdraw(self, retrieve: RetrieveRequest) -> RetrieveOutcome:
        """The round of a cancelled forward: closed as it stands; what it did not send stays owed."""
        await retrieves.withdraw(self.ctx.pool, retrieve.retrieve_id)
        progress = await retrieves.progress(self.ctx.pool, retrieve.retrieve_id)
        log.info("forward round %s cancelled: %d sent, %d refused", retrieve.retrieve_id, progress.completed, progress.failed)
        return RetrieveOutcome("cancelled", progress.completed, progress.warning, progress.failed)

    @activity.defn(name=names.FORWARD_LIST)
    async def list_owed(self, request: ForwardRequest) -> RetrieveRequest:
        """A retrieve of the study's instances this rule's destination has not acknowledged (of no
        instances, and recorded nowhere, when nothing is owed)."""
        sql, params = owed_instances(request.tenant, request.study_uid, requester(request.rule), request.destination_ae)
        retrieve_id = uuid.uuid4().hex
        total = await retrieves.create(
            self.ctx.pool,
            retrieve_id,
            request.tenant,
            requester(request.rule),
            request.destination_ae,
            sql,
            params,
            MAX_INSTANCES,
            keep_empty=False,
        )
        if not total:
            return RetrieveRequest(request.tenant, "", request.destination_ae, "", 0, 0)
        log.info("forward %s: %d instances of a study owed to %s", request.rule, total, request.destination_ae)
        rule = await rule_in_force(self.ctx.settings.routing, self.ctx.pool, request.rule)
        slots = rule.to.max_associations if rule else 1
        return RetrieveRequest(request.tenant, retrieve_id, request.destination_ae, "", 0, total, request.deidentify, slots)
