"""pynetdicom event handlers: C-ECHO, C-STORE and Storage Commitment N-ACTION.

Handlers run on pynetdicom's association threads; the archive's async code runs on the actor's
loop thread, so each handler hands its coroutine over and waits for the answer.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

from pydicom.dataset import Dataset
from pynetdicom import evt
from temporalio.common import WorkflowIDConflictPolicy

from activities.types import CommitmentRequest
from actors.loop_thread import LoopThread
from archive.index import commitments
from archive.receipt import Outcome, Receipt
from archive.settings import Settings
from archive.uids import is_valid_uid
from workflows.commitment import StorageCommitmentWorkflow, workflow_id
from workflows.ingest import Ingest

log = logging.getLogger("dicomflow.scp")

SUCCESS = 0x0000
OUT_OF_RESOURCES = 0xA700
DATASET_MISMATCH = 0xA900
CANNOT_UNDERSTAND = 0xC000
DUPLICATE_SOP_INSTANCE = 0x0111
PROCESSING_FAILURE = 0x0110
MISSING_ATTRIBUTE = 0x0120
INVALID_ATTRIBUTE_VALUE = 0x0106

_STATUS = {
    Outcome.STORED: SUCCESS,
    Outcome.DUPLICATE: SUCCESS,
    Outcome.REPLACED: SUCCESS,
    Outcome.CONFLICT: DUPLICATE_SOP_INSTANCE,
    Outcome.INVALID: CANNOT_UNDERSTAND,
    Outcome.MISMATCH: DATASET_MISMATCH,
    Outcome.FAILED: OUT_OF_RESOURCES,
}


def status(code: int, comment: str | None = None) -> Dataset:
    ds = Dataset()
    ds.Status = code
    if comment:
        ds.ErrorComment = comment[:64]  # LO: 64 characters at most
    return ds


def receipt_status(receipt: Receipt) -> Dataset:
    code = _STATUS[receipt.outcome]
    return status(code, None if code == SUCCESS else receipt.reason)


class DimseHandlers:
    def __init__(self, settings: Settings, ingest: Ingest, loop: LoopThread) -> None:
        self.settings = settings
        self.ingest = ingest
        self.loop = loop
        self._studies: dict[int, set[tuple[str, str]]] = {}
        self._lock = threading.Lock()

    def handlers(self) -> list:
        return [
            (evt.EVT_C_ECHO, self.on_echo),
            (evt.EVT_C_STORE, self.on_store),
            (evt.EVT_N_ACTION, self.on_n_action),
            (evt.EVT_RELEASED, self.on_association_end),
            (evt.EVT_ABORTED, self.on_association_end),
            (evt.EVT_CONN_CLOSE, self.on_association_end),
        ]

    def tenant(self, event: evt.Event) -> str:
        # the Called AE Title as the peer sent it (acceptor.ae_title is always our own)
        called = event.assoc.requestor.primitive.called_ae_title
        return self.settings.tenant_for_ae(event.assoc.requestor.ae_title, called)

    def on_echo(self, event: evt.Event) -> int:
        return SUCCESS

    def on_store(self, event: evt.Event) -> Dataset:
        path = Path(event.dataset_path)
        try:
            staged = self.ingest.blobs.stage_file(path)
        except OSError as err:
            path.unlink(missing_ok=True)
            return status(OUT_OF_RESOURCES, f"cannot read the received data: {err}")
        calling = event.assoc.requestor.ae_title
        request = event.request
        receipt = self.loop.run(self.ingest.receive(
            self.tenant(event), staged, f"dimse:{calling}",
            expect_sop_uid=str(request.AffectedSOPInstanceUID), expect_sop_class=str(request.AffectedSOPClassUID),
        ))
        if receipt.outcome is not Outcome.STORED:
            log.info("C-STORE from %s: %s %s", calling, receipt.outcome.value, receipt.reason or "")
        if receipt.needs_workflow:
            with self._lock:
                self._studies.setdefault(id(event.assoc), set()).add((receipt.tenant, receipt.attributes.study_uid))
        return receipt_status(receipt)

    def on_association_end(self, event: evt.Event) -> None:
        with self._lock:
            studies = self._studies.pop(id(event.assoc), None)
        if studies:
            self.loop.submit(self.ingest.flush(studies))  # signal now, don't hold the peer

    def on_n_action(self, event: evt.Event):
        request = event.request
        if request.ActionTypeID != 1:
            return status(0x0123, "unknown Action Type ID"), None  # No such action
        info: Dataset = event.action_information
        transaction_uid = str(info.get("TransactionUID", "") or "")
        if not is_valid_uid(transaction_uid):
            return status(INVALID_ATTRIBUTE_VALUE if transaction_uid else MISSING_ATTRIBUTE, "TransactionUID missing or invalid"), None
        refs = []
        for item in info.get("ReferencedSOPSequence", []):
            sop_class, sop_uid = str(item.get("ReferencedSOPClassUID", "")), str(item.get("ReferencedSOPInstanceUID", ""))
            if not (is_valid_uid(sop_class) and is_valid_uid(sop_uid)):
                return status(INVALID_ATTRIBUTE_VALUE, "a Referenced SOP item has an invalid UID"), None
            refs.append((sop_class, sop_uid))
        if not refs:
            return status(MISSING_ATTRIBUTE, "ReferencedSOPSequence is empty"), None
        try:
            self.loop.run(self._start_commitment(event, transaction_uid, refs), timeout=30)
        except Exception as err:  # noqa: BLE001 - the requester must learn we could not take it
            log.exception("storage commitment %s not accepted", transaction_uid)
            return status(PROCESSING_FAILURE, f"cannot accept the request: {type(err).__name__}"), None
        return status(SUCCESS), None

    async def _start_commitment(self, event: evt.Event, transaction_uid: str, refs: list[tuple[str, str]]) -> None:
        tenant = self.tenant(event)
        calling = event.assoc.requestor.ae_title
        called = event.assoc.requestor.primitive.called_ae_title
        await commitments.record_request(self.ingest.pool, tenant, transaction_uid, calling, called, refs)
        client = await self.ingest.temporal_client()
        await client.start_workflow(
            StorageCommitmentWorkflow.run,
            CommitmentRequest(tenant, transaction_uid, calling, self.settings.commitment_timeout_seconds),
            id=workflow_id(tenant, transaction_uid),
            task_queue=self.settings.temporal_task_queue,
            id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        )
