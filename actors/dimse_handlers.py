"""pynetdicom's event handlers for the SCP: the gate decides who may associate and use which
service (actors/dimse_gate.py), C-ECHO and C-STORE are answered here, and Storage Commitment, the
query/retrieve services and MPPS each have a service of their own that gets the gate and the
resources it needs (actors/dimse_context.py), never this object.

Handlers run on pynetdicom's association threads; the archive's async code runs on the actor's
loop thread, so each handler hands its coroutine over and waits for the answer.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import cast

from pydicom.dataset import Dataset
from pynetdicom import evt
from pynetdicom.dimse_primitives import C_STORE

from actors.dimse_commitment import CommitmentService
from actors.dimse_context import DimseContext
from actors.dimse_find import FindService
from actors.dimse_gate import DimseGate
from actors.dimse_get import GetService
from actors.dimse_move import MoveService
from actors.dimse_mpps import MppsService
from actors.dimse_status import status
from actors.loop_thread import LoopThread
from archive.audit import AuditAction
from archive.audit import Outcome as AuditOutcome
from archive.config.settings import Settings
from archive.dicom import dicom_status as st
from archive.identity.tokens import TokenVerifier
from archive.services.receipt import Outcome, Receipt
from archive.services.receipt_timing import ReceiptHistogram
from receiving.ingest import Ingest

log = logging.getLogger("dicomflow.scp")


def receipt_status(receipt: Receipt) -> Dataset:
    code = st.status_of(receipt)
    return status(code, None if code == st.SUCCESS else receipt.reason)


class DimseHandlers:
    def __init__(self, settings: Settings, ingest: Ingest, loop: LoopThread, verifier: TokenVerifier | None = None) -> None:
        self.settings = settings
        self.ingest = ingest
        self.loop = loop
        self.gate = DimseGate(settings, ingest.resources.audit, loop, verifier)
        self.context = DimseContext(settings, loop, self.gate, ingest.pool, ingest.blobs, ingest.temporal_client)
        self.receipt_times = ReceiptHistogram()

    def handlers(self) -> list[evt.EventHandlerType]:
        ctx = self.context
        mpps = MppsService(ctx)
        return [
            (evt.EVT_REQUESTED, self.gate.on_requested),
            (evt.EVT_USER_ID, self.gate.on_user_identity),
            (evt.EVT_C_ECHO, self.on_echo),
            (evt.EVT_C_STORE, self.on_store),
            (evt.EVT_N_ACTION, CommitmentService(ctx).on_n_action),
            (evt.EVT_C_FIND, FindService(ctx).on_find),
            (evt.EVT_C_GET, GetService(ctx).on_get),
            (evt.EVT_C_MOVE, MoveService(ctx).on_move),
            (evt.EVT_N_CREATE, mpps.on_n_create),
            (evt.EVT_N_SET, mpps.on_n_set),
            (evt.EVT_RELEASED, self.on_association_end),
            (evt.EVT_ABORTED, self.on_association_end),
            (evt.EVT_CONN_CLOSE, self.on_association_end),
        ]

    # -- services -------------------------------------------------------------------------------

    def on_echo(self, event: evt.Event) -> int:
        return st.SUCCESS

    def on_store(self, event: evt.Event) -> Dataset:
        started = time.monotonic()
        outcome = "failed"  # an exception below is answered by pynetdicom as a failure
        try:
            answer, outcome = self._store(event)
            return answer
        finally:
            self.receipt_times.observe(time.monotonic() - started, outcome)

    def _store(self, event: evt.Event) -> tuple[Dataset, str]:
        """The answer, and the outcome /metrics counts it under (archive.services.receipt.Outcome, or 'not_authorized')."""
        path = Path(event.dataset_path)
        allowed = self.gate.allowed(event, "store")
        if isinstance(allowed, Dataset):
            path.unlink(missing_ok=True)
            return allowed, "not_authorized"
        association, tenant = allowed
        try:
            staged = self.ingest.blobs.stage_file(path)
        except OSError as err:
            path.unlink(missing_ok=True)
            return status(st.OUT_OF_RESOURCES, f"cannot read the received data: {err}"), Outcome.FAILED.value
        calling = association.caller.calling_ae
        request = cast(C_STORE, event.request)  # the request of an EVT_C_STORE
        # parsed here, on the association's thread; only the index and the commit go to the loop
        prepared = self.ingest.prepare(
            tenant, staged, expect_sop_uid=str(request.AffectedSOPInstanceUID), expect_sop_class=str(request.AffectedSOPClassUID)
        )
        receipt = prepared if isinstance(prepared, Receipt) else self.loop.run(self.ingest.commit(prepared, f"dimse:{calling}"))
        if receipt.outcome is not Outcome.STORED:
            log.info("C-STORE from %s: %s %s", calling, receipt.outcome.value, receipt.reason or "")
        if receipt.outcome.ok and receipt.attributes is not None:
            association.stored[receipt.attributes.study_uid] += 1
        else:
            association.refused += 1
        return receipt_status(receipt), receipt.outcome.value

    def on_association_end(self, event: evt.Event) -> None:
        association = self.gate.forget(event)
        if association is None:
            return
        for study_uid, count in association.stored.items():  # one audit event per study, as PS3.15 A.5.3.4 lists them
            self.gate.audit(
                association.caller, AuditAction.STORE, AuditOutcome.SUCCESS, association.tenant, study_uid, instances=count
            )
        if association.refused:
            self.gate.audit(
                association.caller,
                AuditAction.STORE,
                AuditOutcome.MINOR_FAILURE,
                association.tenant,
                refused_instances=association.refused,
            )
