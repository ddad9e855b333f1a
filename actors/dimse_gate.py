"""Who may associate over DIMSE and what each association may do, as one small gate every service
asks: the AE table at A-ASSOCIATE (calling AE, address, TLS certificate), a JWT in user identity
negotiation, the limits on open associations, the per-service check and the audit trail."""

from __future__ import annotations

import logging
import threading
from collections import Counter
from typing import Any, cast

from pydicom.dataset import Dataset
from pynetdicom import evt
from pynetdicom.association import Association
from pynetdicom.pdu_primitives import A_ASSOCIATE

from actors.dimse_status import status
from actors.loop_thread import LoopThread
from archive.audit import AuditAction, AuditEvent, AuditLog
from archive.audit import Outcome as AuditOutcome
from archive.config.settings import Settings
from archive.dicom import dicom_status as st
from archive.identity import TenantRefused
from archive.identity.ae_rules import Caller, Refusal, admit, tenant_of
from archive.identity.tokens import InvalidToken, TokenVerifier
from dimse.server import peer_certificate

log = logging.getLogger("dicomflow.scp")

JWT_IDENTITY = 5  # PS3.7 D.3.3.7: User-Identity-Type 5 is a JSON Web Token
VERIFICATION = "1.2.840.10008.1.1"


def associate_rq(event: evt.Event) -> A_ASSOCIATE:
    """The A-ASSOCIATE-RQ: Optional in pynetdicom's annotations, but set before EVT_REQUESTED fires."""
    return cast(A_ASSOCIATE, event.assoc.requestor.primitive)


class AssociationState:
    """What we know about one open association: its caller, tenant and what it stored."""

    def __init__(self, caller: Caller, peer_host: str) -> None:
        self.caller = caller
        self.peer_host = peer_host
        self.tenant: str | None = None
        self.stored: Counter[str] = Counter()  # study UID -> instances stored
        self.refused = 0


class DimseGate:
    """Who may associate and what each association may do: the AE table at A-ASSOCIATE, the token in
    user identity negotiation, the limits on open associations, each service's check (`allowed`)
    and the audit trail. Every DIMSE service asks it; it knows none of them."""

    def __init__(self, settings: Settings, audit_log: AuditLog, loop: LoopThread, verifier: TokenVerifier | None = None) -> None:
        self.settings = settings
        self.audit_log = audit_log
        self.loop = loop
        self.verifier = verifier
        self._open: dict[int, AssociationState] = {}
        self._lock = threading.Lock()

    # -- who is asking --------------------------------------------------------------------------

    def audit(
        self,
        caller: Caller,
        action: AuditAction,
        outcome: AuditOutcome,
        tenant: str | None = None,
        study_uid: str | None = None,
        **detail: Any,
    ) -> None:
        self.audit_log.record(
            AuditEvent(
                action=action,
                outcome=outcome,
                subject=caller.subject(),
                method=caller.principal.method if caller.principal.method == "oidc" else "ae",
                source="dimse",
                peer=caller.peer,
                tenant=tenant,
                study_uid=study_uid,
                detail={"calling_ae": caller.calling_ae, **detail},
            )
        )

    def on_requested(self, event: evt.Event) -> None:
        """A-ASSOCIATE-RQ: the AE table decides before any negotiation (rejected: calling AE not recognized)."""
        assoc, rq = event.assoc, associate_rq(event)
        calling = rq.calling_ae_title
        peer = assoc.requestor.address
        proposed = {str(c.abstract_syntax) for c in rq.presentation_context_definition_list}
        decision = admit(
            self.settings, calling, peer, verification_only=proposed <= {VERIFICATION}, certificate=peer_certificate(assoc)
        )
        if isinstance(decision, Refusal):
            self._reject(
                assoc, Caller(calling.strip(), peer, None, frozenset()), decision.reason, (0x01, 0x01, decision.diagnostic)
            )
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
            if held >= self.settings.dimse.max_associations_per_peer:
                return f"{host} already holds {held} associations (dimse_max_associations_per_peer)"
            if len(self._open) >= self.settings.dimse.max_associations:
                return f"{len(self._open)} associations are open (dimse_max_associations)"
            self._open[id(assoc)] = AssociationState(caller, host)
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

    def _association(self, event: evt.Event) -> AssociationState | None:
        with self._lock:
            return self._open.get(id(event.assoc))

    def _tenant(self, event: evt.Event, association: AssociationState) -> str:
        if association.tenant is None:
            called = associate_rq(event).called_ae_title
            association.tenant = tenant_of(self.settings, association.caller, called)
            self.audit(association.caller, AuditAction.LOGIN, AuditOutcome.SUCCESS, association.tenant, called_ae=called.strip())
        return association.tenant

    def allowed(self, event: evt.Event, service: str) -> tuple[AssociationState, str] | Dataset:
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

    def forget(self, event: evt.Event) -> AssociationState | None:
        """The association's state, no longer counted against the limits."""
        with self._lock:
            return self._open.pop(id(event.assoc), None)

    def state(self, event: evt.Event) -> AssociationState | None:
        return self._association(event)
