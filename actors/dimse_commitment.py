"""Storage Commitment SCP (N-ACTION): the request is recorded and its workflow started; while the
requester keeps the association open, the N-EVENT-REPORT goes on it as soon as every referenced
instance is committed (PS3.4 J.3.3.1.2 allows both). Otherwise, or if that fails, the workflow
delivers it on a new association to the AE table's address. The report is claimed in the index
by whoever sends it, so it goes out once."""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING

from pydicom.dataset import Dataset
from pynetdicom import evt
from pynetdicom.association import Association
from pynetdicom.sop_class import StorageCommitmentPushModel  # type: ignore[attr-defined]  # generated at import
from temporalio.common import WorkflowIDConflictPolicy

from activities.event_report import COMMITMENT_INSTANCE
from actors.dimse_status import status
from archive.audit import AuditAction
from archive.audit import Outcome as AuditOutcome
from archive.dicom import dicom_status as st
from archive.dicom.uids import is_valid_uid
from archive.index import commitments
from archive.services.commitment import Classified, classify, report_dataset
from contract import names
from contract.payloads import CommitmentRequest

if TYPE_CHECKING:
    from actors.dimse_context import DimseContext

log = logging.getLogger("dicomflow.scp.commitment")
POLL_SECONDS = 1.0
Refs = list[tuple[str, str]]


def _references(info: Dataset) -> tuple[str, Refs] | Dataset:
    """The Transaction UID and the referenced instances, or the status that refuses the request."""
    transaction_uid = str(info.get("TransactionUID", "") or "")
    if not is_valid_uid(transaction_uid):
        code = st.INVALID_ATTRIBUTE_VALUE if transaction_uid else st.MISSING_ATTRIBUTE
        return status(code, "TransactionUID missing or invalid")
    refs = []
    for item in info.get("ReferencedSOPSequence", []):
        sop_class, sop_uid = str(item.get("ReferencedSOPClassUID", "")), str(item.get("ReferencedSOPInstanceUID", ""))
        if not (is_valid_uid(sop_class) and is_valid_uid(sop_uid)):
            return status(st.INVALID_ATTRIBUTE_VALUE, "a Referenced SOP item has an invalid UID")
        refs.append((sop_class, sop_uid))
    if not refs:
        return status(st.MISSING_ATTRIBUTE, "ReferencedSOPSequence is empty")
    return transaction_uid, refs


class CommitmentService:
    def __init__(self, ctx: DimseContext) -> None:
        self.ctx = ctx

    def on_n_action(self, event: evt.Event) -> tuple[Dataset, Dataset | None]:
        ctx = self.ctx
        allowed = ctx.gate.allowed(event, "commit")
        if isinstance(allowed, Dataset):
            return allowed, None
        association, tenant = allowed
        calling = association.caller.calling_ae
        reply_to = ctx.settings.dimse.ae_table.get(calling)
        if reply_to is None or not reply_to.reachable:
            # a requester that leaves before the report could never get it: refused now, not left waiting
            return status(st.PROCESSING_FAILURE, f"no address for {calling} in ae_table"), None
        if event.action_type != 1:
            return status(st.NO_SUCH_ACTION_TYPE, "unknown Action Type ID"), None
        parsed = _references(event.action_information)
        if isinstance(parsed, Dataset):
            return parsed, None
        transaction_uid, refs = parsed
        called = str(event.assoc.requestor.primitive.called_ae_title if event.assoc.requestor.primitive else "")
        try:
            ctx.loop.run(self._start(tenant, calling, called, transaction_uid, refs), timeout=30)
        except Exception as err:  # noqa: BLE001 - the requester must learn we could not take it
            log.exception("storage commitment %s not accepted", transaction_uid)
            return status(st.PROCESSING_FAILURE, f"cannot accept the request: {type(err).__name__}"), None
        ctx.gate.audit(
            association.caller,
            AuditAction.COMMIT,
            AuditOutcome.SUCCESS,
            tenant,
            transaction_uid=transaction_uid,
            references=len(refs),
        )
        threading.Thread(
            target=self._report_while_open,
            args=(event.assoc, tenant, transaction_uid),
            name=f"commitment-{transaction_uid[-12:]}",
            daemon=True,
        ).start()
        return status(st.SUCCESS), None

    async def _start(self, tenant: str, calling: str, called: str, transaction_uid: str, refs: Refs) -> None:
        settings = self.ctx.settings
        await commitments.record_request(self.ctx.pool, tenant, transaction_uid, calling, called, refs)
        client = await self.ctx.temporal_client()
        await client.start_workflow(
            names.COMMITMENT_WORKFLOW,
            CommitmentRequest(
                tenant,
                transaction_uid,
                calling,
                settings.dimse.commitment_timeout_seconds,
                settings.dimse.commitment_unknown_grace_seconds,
            ),
            id=names.commitment_workflow_id(tenant, transaction_uid),
            task_queue=settings.temporal.task_queue,
            id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        )

    def _report_while_open(self, assoc: Association, tenant: str, transaction_uid: str) -> None:
        """Runs on its own thread. Holds the report (the workflow waits) while the requester keeps the
        association open, and sends it there once all is committed; gives it back to the workflow
        when the association closes or the request times out."""
        loop, pool = self.ctx.loop, self.ctx.pool
        if not loop.run(commitments.claim_report(pool, tenant, transaction_uid), timeout=30):
            return
        until = time.monotonic() + self.ctx.settings.dimse.commitment_timeout_seconds
        time.sleep(0.2)  # the N-ACTION response leaves first
        while assoc.is_established and time.monotonic() < until:
            loop.run(commitments.refresh_claim(pool, tenant, transaction_uid), timeout=30)
            grace = self.ctx.settings.dimse.commitment_unknown_grace_seconds
            found = loop.run(classify(pool, tenant, transaction_uid, final=False, unknown_grace=grace), timeout=30)
            if not found.pending and self._deliver(assoc, tenant, found):
                return
            if not found.pending:
                break
            time.sleep(POLL_SECONDS)
        loop.run(commitments.release_claim(pool, tenant, transaction_uid), timeout=30)
        loop.submit(self._wake(tenant, transaction_uid))

    def _deliver(self, assoc: Association, tenant: str, found: Classified) -> bool:
        loop, pool, uid = self.ctx.loop, self.ctx.pool, found.row.transaction_uid
        event_type = 2 if found.failed else 1
        try:
            # pynetdicom pauses the association's own reader while a send_* waits for its answer
            answer, _ = assoc.send_n_event_report(
                report_dataset(uid, found.committed, found.failed), event_type, StorageCommitmentPushModel, COMMITMENT_INSTANCE
            )
            delivered = answer is not None and answer.get("Status") == 0
        except Exception:  # noqa: BLE001 - any failure here leaves the report to the workflow
            log.warning("commitment %s: report on the open association failed", uid, exc_info=True)
            delivered = False
        if delivered:
            loop.run(commitments.record_outcome(pool, tenant, uid, "reported", found.committed, found.failed), timeout=30)
            loop.submit(self._wake(tenant, uid))
        return delivered

    async def _wake(self, tenant: str, transaction_uid: str) -> None:
        """The workflow ends now instead of at its next poll."""
        try:
            client = await self.ctx.temporal_client()
            await client.get_workflow_handle(names.commitment_workflow_id(tenant, transaction_uid)).signal(names.COMMITMENT_WAKE)
        except Exception as err:  # noqa: BLE001 - it polls anyway
            log.debug("commitment workflow %s not woken: %s", transaction_uid, err)
