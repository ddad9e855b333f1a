"""pynetdicom's C-MOVE SCP replaced for the two Q/R MOVE SOP classes: the EVT_C_MOVE handler
(actors/dimse_move.MoveService) yields (status, identifier) pairs, pending ones carrying the
sub-operation counts, as for C-FIND; this sends each as a C-MOVE response.

pynetdicom's own `_move_scp` opens the association to the destination itself, in this process;
dicomflow's sub-operations run in a Temporal workflow instead (durable, resumable, visible in the
Temporal UI), and the SCP only relays their progress. pynetdicom has no hook for that: the
service class is swapped where `Association` looks it up (`uid_to_service_class`).
"""

from __future__ import annotations

import logging
from io import BytesIO
from typing import Any

import pynetdicom.association
from pynetdicom import evt
from pynetdicom.dimse_primitives import C_MOVE
from pynetdicom.dsutils import encode
from pynetdicom.service_class import QueryRetrieveServiceClass

log = logging.getLogger("dicomflow.scp.move")

MOVE_MODELS = {
    "1.2.840.10008.5.1.4.1.2.1.2": "patient",  # Patient Root Q/R Information Model - MOVE
    "1.2.840.10008.5.1.4.1.2.2.2": "study",  # Study Root Q/R Information Model - MOVE
}
PROCESSING_FAILURE = 0xC511


class RelayedMoveService(QueryRetrieveServiceClass):
    def _move_scp(self, req: C_MOVE, context: Any) -> None:
        cx_id, syntax = context.context_id, context.transfer_syntax[0]
        try:
            responses = evt.trigger(
                self.assoc, evt.EVT_C_MOVE, {"request": req, "context": context.as_tuple, "_is_cancelled": self.is_cancelled}
            )
            assert responses is not None  # MoveService.on_move is bound: it answers with a generator
            for status, identifier in responses:
                if not self.assoc.is_established:
                    return
                rsp = self.validate_status(status, _response_to(req))
                if identifier is not None:
                    encoded = encode(identifier, syntax.is_implicit_VR, syntax.is_little_endian, syntax.is_deflated)
                    rsp.Identifier = BytesIO(encoded or b"")  # None (cannot encode) gives an empty identifier
                self.dimse.send_msg(rsp, cx_id)
        except Exception:  # noqa: BLE001 - the requester gets a failure, the SCP goes on
            log.exception("C-MOVE handler failed")
            rsp = _response_to(req)
            rsp.Status = PROCESSING_FAILURE
            if self.assoc.is_established:
                self.dimse.send_msg(rsp, cx_id)


def _response_to(req: C_MOVE) -> C_MOVE:
    rsp = C_MOVE()
    rsp.MessageIDBeingRespondedTo = req.MessageID
    rsp.AffectedSOPClassUID = req.AffectedSOPClassUID
    return rsp


def install() -> None:
    """Have pynetdicom's associations use RelayedMoveService for the Q/R MOVE SOP classes."""
    original = pynetdicom.association.uid_to_service_class
    if getattr(original, "relays_move", False):
        return

    def service_class_for(uid: str) -> Any:
        return RelayedMoveService if uid in MOVE_MODELS else original(uid)

    service_class_for.relays_move = True  # type: ignore[attr-defined]
    pynetdicom.association.uid_to_service_class = service_class_for
