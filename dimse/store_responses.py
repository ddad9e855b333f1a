"""C-STORE responses written straight to the socket.

A receiving association answers each C-STORE through pynetdicom's message objects, its DUL queue
and state machine, and waits for the DUL's next poll (1 ms on a receiving association) before the
answer leaves; the modality sends nothing meanwhile. A plain answer (a status, no comment) is
encoded here and written at once when the DUL lends its socket with nothing of its own to send or
read (dimse/reactor); any other answer goes through pynetdicom as before.
"""

from __future__ import annotations

from typing import Any

import pynetdicom.association
from pynetdicom import evt
from pynetdicom.dimse_primitives import C_STORE

from dimse.direct_store import c_store_response_command, pdata_pdu
from dimse.get_pending import GetPendingThrottle
from dimse.reactor import written_when_idle

_COMMAND_LAST = 0x03
_OPTIONAL = ("OffendingElement", "ErrorComment", "ErrorID", "AttributeIdentifierList")


class StoreResponses(GetPendingThrottle):
    def send_msg(self, primitive: Any, context_id: int) -> None:
        if not self._response_written(primitive, context_id):
            super().send_msg(primitive, context_id)

    def _response_written(self, primitive: Any, context_id: int) -> bool:
        if not (
            isinstance(primitive, C_STORE)
            and primitive.MessageIDBeingRespondedTo is not None
            and primitive.Status is not None
            and not any(getattr(primitive, k, None) for k in _OPTIONAL)
            and not self.assoc.get_handlers(evt.EVT_DIMSE_SENT)
        ):
            return False
        try:
            command = c_store_response_command(
                str(primitive.AffectedSOPClassUID),
                str(primitive.AffectedSOPInstanceUID),
                primitive.MessageIDBeingRespondedTo,
                primitive.Status,
            )
        except UnicodeEncodeError:
            return False  # a sender's UID that is not ASCII: pynetdicom answers it as it always did
        if self.maximum_pdu_size and len(command) + 6 > self.maximum_pdu_size:
            return False
        return written_when_idle(self.dul, pdata_pdu(context_id, _COMMAND_LAST, command))


def install() -> None:
    """Process-wide, after pynetdicom_get_pending.install(); for associations created from now on."""
    pynetdicom.association.DIMSEServiceProvider = StoreResponses  # type: ignore[misc]
