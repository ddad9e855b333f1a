"""pynetdicom event handlers: who may associate (AE table, host, token), C-ECHO, C-STORE,
Storage Commitment N-ACTION, and the query/retrieve services (dimse_find, dimse_get, dimse_move),
each checked against what the caller may do and audited.

Handlers run on pynetdicom's association threads; the archive's async code runs on the actor's
loop thread, so each handler hands its coroutine over and waits for the answer.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any, cast

from pydicom.dataset import Dataset
from pynetdicom import evt
from pynetdicom.association import Association
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.pdu_primitives import A_ASSOCIATE

from actors.dimse_commitment import CommitmentService
from actors.dimse_find import FindService
from actors.dimse_get import GetService
from actors.dimse_move import MoveService
from actors.dimse_mpps import MppsService
from actors.dimse_status import status
from actors.loop_thread import LoopThread
from archive import dicom_status as st
from archive.audit import AuditAction, AuditEvent
from archive.audit import Outcome as AuditOutcome
from archive.identity import TenantRefused
from archive.identity.ae_rules import Caller, Refusal, admit, tenant_of
from archive.identity.tokens import InvalidToken, TokenVerifier
from archive.receipt import Outcome, Receipt
from archive.receipt_timing import ReceiptHistogram
from archive.settings import Settings
from dimse.server import peer_certificate
from receiving.ingest import Ingest

log = logging.getLogger("dicomflow.scp")

JWT_IDENTITY = 5  # PS3.7 D.3.3.7: User-Identity-Type 5 is a JSON Web Token
VERIFICATION = "1.2.840.10008.1.1"


def receipt_status(receipt: Receipt) -> Dataset:
    code = st.receipt_status(receipt.outcome)
    return status(code, None if code == st.SUCCESS else receipt.reason)


def associate_rq(event: evt.Event) -> A_ASSOCIATE:
    """The A-ASSOCIATE-RQ: Optional in pynetdicom's annotations, but set before EVT_REQUESTED fires."""
    return cast(A_ASSOCIATE, event.assoc.requestor.primitive)


class _Association:
    """What we know about one open association: its caller, tenant and what it stored."""

    def __init__(self, caller: Caller, peer_host: str) -> None:
        self.caller = caller
        self.peer_host = peer_host
        self.tenant: str | None = None
        self.stored: Counter[str] = Counter()  # study UID -> instances stored
        self.refused = 0
        self.studies: set[tuple[str, str]] = set()


class DimseHandlers:
    def __init__(self, settings: Settings, ingest: Ingest, loop: LoopThread, verifier: TokenVerifier | None = None) -> None:
        self.settings = settings
        self.ingest = ingest
        self.loop = loop
        self.verifier = verifier
        self._open: dict[int, _Association] = {}
        self._lock = threading.Lock()
        self.receipt_times = ReceiptHistogram()

    def handlers(self) -> list[evt.EventHandlerType]:
        return [
            (evt.EVT_REQUESTED, self.on_requested),
            (evt.EVT_USER_ID, self.on_user_identity),
            (evt.EVT_C_ECHO, self.on_echo),
            (evt.EVT_C_STORE, self.on_store),
            (evt.EVT_N_ACTION, CommitmentService(self).on_n_action),
            (evt.EVT_C_FIND, FindService(self).on_find),
            (evt.EVT_C_GET, GetService(self).on_get),
            (evt.EVT_C_MOVE, MoveService(self).on_move),
            (evt.EVT_N_CREATE, MppsService(self).on_n_create),
            (evt.EVT_N_SET, MppsService(self).on_n_set),
            (evt.EVT_RELEASED, self.on_association_end),
            (evt.EVT_ABORTED, self.on_association_end),
            (evt.EVT_CONN_CLOSE, self.on_association_end),
        ]

    # -- who is asking --------------------------------------------------------------------------

    def audit(self, caller: Caller, action: AuditAction, outcome: AuditOutcome, tenant: str | None = None,
               study_uid: str | None = None, **detail: Any) -> None:
        self.ingest.resources.audit.record(AuditEvent(
            action=action, outcome=outcome, subject=caller.subject(), method=caller.principal.method if
            caller.principal.method == "oidc" else "ae", source="dimse", peer=caller.peer, tenant=tenant,
            study_uid=study_uid, detail={"calling_ae": caller.calling_ae, **detail}))

    def on_requested(self, event: evt.Event) -> None:
        """A-ASSOCIATE-RQ: the AE table decides before any negotiation (rejected: calling AE not recognized)."""
        assoc, rq = event.assoc, associate_rq(event)
        calling = rq.calling_ae_title
        peer = assoc.requestor.address
        proposed = {str(c.abstract_syntax) for c in rq.presentation_context_definition_list}
        decision = admit(self.settings, calling, peer, verification_only=proposed <= {VERIFICATION},
                         certificate=peer_certificate(assoc))
        if isinstance(decision, Refusal):
            self._reject(assoc, Caller(calling.strip(), peer, None, frozenset()), decision.reason,
                         (0x01, 0x01, decision.diagnostic))
            return
        full = self._hold(assoc, decision, str(assoc.requestor.address))
        if full is not None:
            # PS3.8 7.1.1.9: rejected-transient, by the service provider (presentation), local limit exceeded
            self._reject(assoc, decision, full, (0x02, 0x03, 0x02))

    def _hold(self, assoc: Association, caller: Caller, host: str) -> str | None:
        """A slot for this association, or which limit is full. Only associations whose
        A-ASSOCIATE-RQ came count (pynetdicom's own limit, maximum_associations, also counted
        connections still silent: two idle sockets refused every C-ECHO with a limit of 2)."""
        with self._lock:
            held = sum(1 for a in self._open.values() if a.peer_host == host)
            if held >= self.settings.dimse_max_associations_per_peer:
                return f"{host} already holds {held} associations (dimse_max_associations_per_peer)"
            if len(self._open) >= self.settings.dimse_max_associations:
                return f"{len(self._open)} associations are open (dimse_max_associations)"
            self._open[id(assoc)] = _Association(caller, host)
            return None

    def _reject(self, assoc: Association, caller: Caller, reason: str, result: tuple[int, int, int]) -> None:
        log.warning("association refused: %s", reason)
        self.audit(caller, AuditAction.LOGIN, AuditOutcome.MINOR_FAILURE, refused=reason)
        assoc.acse.send_reject(*result)
        assoc.kill()  # as pynetdicom's own rejections do: the A-ASSOCIATE-RJ leaves before the socket closes

    def on_user_identity(self, event: evt.Event, *_: Any) -> tuple[bool, bytes | None]:
        """User Identity Negotiation: a JWT is verified exactly like a DICOMweb bearer token."""
        association = self._association(event)
        # user_id_type and primary_field are set on the event at runtime, for EVT_USER_ID only
        if association is None or self.verifier is None or event.user_id_type != JWT_IDENTITY:  # type: ignore[attr-defined]
            return (self.verifier is None and association is not None), None
        try:
            token = event.primary_field.decode("ascii").strip()  # type: ignore[attr-defined]
            association.caller.principal = self.loop.run(self.verifier.verify(token), timeout=15)
        except (InvalidToken, UnicodeDecodeError) as err:
            self.audit(association.caller, AuditAction.LOGIN, AuditOutcome.MINOR_FAILURE, refused=f"token: {err}")
            return False, None
        return True, None

    def _association(self, event: evt.Event) -> _Association | None:
        with self._lock:
            return self._open.get(id(event.assoc))

    def _tenant(self, event: evt.Event, association: _Association) -> str:
        if association.tenant is None:
            called = associate_rq(event).called_ae_title
            association.tenant = tenant_of(self.settings, association.caller, called)
            self.audit(association.caller, AuditAction.LOGIN, AuditOutcome.SUCCESS, association.tenant, called_ae=called.strip())
        return association.tenant

    def allowed(self, event: evt.Event, service: str) -> tuple[_Association, str] | Dataset:
        """The association and its tenant, or the refusal status for this service."""
        association = self._association(event)
        if association is None:
            return status(st.NOT_AUTHORIZED, "association not admitted")
        if not association.caller.may(service):
            self.audit(association.caller, AuditAction.SECURITY_ALERT, AuditOutcome.MINOR_FAILURE, refused=service)
            return status(st.NOT_AUTHORIZED, f"{association.caller.calling_ae} may not use {service}")
        try:
            return association, self._tenant(event, association)
        except TenantRefused as err:
            self.audit(association.caller, AuditAction.SECURITY_ALERT, AuditOutcome.MINOR_FAILURE, refused=str(err))
            return status(st.NOT_AUTHORIZED, str(err))

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
        """The answer, and the outcome /metrics counts it under (archive.receipt.Outcome, or 'not_authorized')."""
        path = Path(event.dataset_path)
        allowed = self.allowed(event, "store")
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
        prepared = self.ingest.receiver.prepare(tenant, staged, expect_sop_uid=str(request.AffectedSOPInstanceUID),
                                                expect_sop_class=str(request.AffectedSOPClassUID))
        receipt = prepared if isinstance(prepared, Receipt) else self.loop.run(
            self.ingest.store(prepared, f"dimse:{calling}"))
        if receipt.outcome is not Outcome.STORED:
            log.info("C-STORE from %s: %s %s", calling, receipt.outcome.value, receipt.reason or "")
        if receipt.outcome.ok and receipt.attributes is not None:
            association.stored[receipt.attributes.study_uid] += 1
        else:
            association.refused += 1
        if receipt.needs_workflow and receipt.attributes is not None:
            association.studies.add((tenant, receipt.attributes.study_uid))
        return receipt_status(receipt), receipt.outcome.value

    def on_association_end(self, event: evt.Event) -> None:
        with self._lock:
            association = self._open.pop(id(event.assoc), None)
        if association is None:
            return
        for study_uid, count in association.stored.items():  # one audit event per study, as PS3.15 A.5.3.4 lists them
            self.audit(association.caller, AuditAction.STORE, AuditOutcome.SUCCESS, association.tenant, study_uid,
                        instances=count)
        if association.refused:
            self.audit(association.caller, AuditAction.STORE, AuditOutcome.MINOR_FAILURE, association.tenant,
                        refused_instances=association.refused)
        if association.studies:
            self.loop.submit(self.ingest.flush(association.studies))  # signal now, don't hold the peer
