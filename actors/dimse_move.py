"""C-MOVE SCP whose sub-operations a Temporal workflow performs (`move:{tenant}:{id}`): this
association only accepts the request, records what is to be sent, starts the workflow and relays
its progress as pending responses until the final one.

pynetdicom's own C-MOVE service opens the association to the destination itself, in this process;
`dimse.relayed_move` replaces it for the two Q/R MOVE SOP classes so that the sending is durable,
resumable and visible in the Temporal UI, and sends what `MoveService.on_move` yields.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import logging
import uuid
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from pydicom.dataset import Dataset
from pynetdicom import evt
from temporalio.common import WorkflowIDConflictPolicy

from actors.dimse_find import identified_instances
from actors.dimse_status import Response, failure
from archive.audit import AuditAction
from archive.audit import Outcome as AuditOutcome
from archive.dicom import dicom_status as st
from archive.index import retrieves
from archive.index.retrieves import Progress
from archive.query.retrieve import MAX_INSTANCES
from contract import names
from contract.payloads import RetrieveRequest
from dimse.relayed_move import MOVE_MODELS

if TYPE_CHECKING:
    from actors.dimse_context import DimseContext

log = logging.getLogger("dicomflow.scp.move")

RELAY_INTERVAL = 0.5  # seconds between progress checks (and pending responses, when something changed)


def _status(code: int, progress: Progress, remaining: bool) -> Dataset:
    ds = Dataset()
    ds.Status = code
    if remaining:
        ds.NumberOfRemainingSuboperations = progress.remaining
    ds.NumberOfCompletedSuboperations = progress.completed
    ds.NumberOfFailedSuboperations = progress.failed
    ds.NumberOfWarningSuboperations = progress.warning
    return ds


def final_response(progress: Progress, cancelled: bool) -> Response:
    """PS3.4 C.4.2.1.5: Cancel with what remains; A702 if nothing could be sent; B000 if some failed."""
    if not cancelled and progress.remaining:  # the sender ended without them: they were not sent
        progress.failed, progress.remaining = progress.failed + progress.remaining, 0
    failed = Dataset()
    failed.FailedSOPInstanceUIDList = progress.failed_uids
    if cancelled and progress.remaining:
        return _status(st.CANCEL, progress, remaining=True), failed if progress.failed_uids else None
    if progress.failed and not (progress.completed or progress.warning):
        return _status(st.OUT_OF_RESOURCES_SUBOPERATIONS, progress, remaining=False), failed
    if progress.failed or progress.warning:
        return _status(st.SUBOPERATIONS_WARNING, progress, remaining=False), failed
    return _status(st.SUCCESS, progress, remaining=False), None


class MoveService:
    def __init__(self, ctx: DimseContext) -> None:
        self.ctx = ctx

    def on_move(self, event: evt.Event) -> Iterator[Response]:
        accepted = self._accept(event)
        if not isinstance(accepted, RetrieveRequest):
            yield accepted
            return
        yield from self._relay(event, accepted)

    def _accept(self, event: evt.Event) -> RetrieveRequest | Response:
        """Checks, the list of instances, the workflow started; or the refusal."""
        ctx = self.ctx
        allowed = ctx.gate.allowed(event, "move")
        if isinstance(allowed, Dataset):
            return allowed, None
        association, tenant = allowed
        destination = str(event.move_destination or "").strip()
        entry = ctx.settings.dimse.ae_table.get(destination)
        if entry is None or not entry.reachable or entry.tenant not in (None, tenant):
            why = "has no address in the AE table" if entry is None or not entry.reachable else "serves another tenant"
            return failure(st.MOVE_DESTINATION_UNKNOWN, f"move destination {destination!r} {why}")
        named = identified_instances(event, tenant, MOVE_MODELS)
        if isinstance(named, Dataset):
            return named, None
        sql, params = named
        calling = association.caller.calling_ae
        retrieve = RetrieveRequest(tenant, uuid.uuid4().hex, destination, calling, event.message_id)
        try:
            total = ctx.loop.run(
                retrieves.create(ctx.pool, retrieve.retrieve_id, tenant, calling, destination, sql, params, MAX_INSTANCES),
                timeout=120,
            )
        except retrieves.TooManyInstances as err:
            return failure(st.OUT_OF_RESOURCES_MATCHES, str(err))
        ctx.gate.audit(
            association.caller,
            AuditAction.RETRIEVE,
            AuditOutcome.SUCCESS,
            tenant,
            service="C-MOVE",
            destination=destination,
            instances=total,
            retrieve=retrieve.retrieve_id,
        )
        if total == 0:
            return final_response(Progress(retrieves.DONE, finished=True), cancelled=False)
        return dataclasses.replace(retrieve, instances=total)

    async def _start(self, retrieve: RetrieveRequest) -> Any:
        client = await self.ctx.temporal_client()
        return await client.start_workflow(
            names.RETRIEVE_WORKFLOW,
            retrieve,
            id=names.retrieve_workflow_id(retrieve.tenant, retrieve.retrieve_id),
            task_queue=self.ctx.settings.temporal.task_queue,
            id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        )

    def _relay(self, event: evt.Event, retrieve: RetrieveRequest) -> Iterator[Response]:
        """Pending responses while the workflow sends (when the counts moved), then the final one."""
        loop, pool = self.ctx.loop, self.ctx.pool
        handle = loop.run(self._start(retrieve), timeout=30)
        ended = loop.submit(handle.result())  # guards against a workflow that ends without finishing the books
        shown, cancelled = None, False
        while True:
            if event.is_cancelled and not cancelled:
                loop.run(retrieves.cancel(pool, retrieve.retrieve_id), timeout=30)
                cancelled = True
            progress = loop.run(retrieves.progress(pool, retrieve.retrieve_id), timeout=30)
            if progress.finished or ended.done():
                break
            counts = (progress.remaining, progress.completed, progress.failed, progress.warning)
            if counts != shown:
                shown = counts
                yield _status(st.PENDING, progress, remaining=True), None
            # the workflow's end wakes this at once: the requester is not kept waiting for the next check
            concurrent.futures.wait([ended], timeout=RELAY_INTERVAL)
        final = loop.run(retrieves.progress(pool, retrieve.retrieve_id, with_failed_uids=True), timeout=30)
        yield final_response(final, cancelled)
