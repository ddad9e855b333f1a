"""The query/retrieve SCU side toward another archive (a legacy PACS being migrated): Study Root
C-FIND and C-MOVE on one association, through pynetdicom's public API. Blocking calls: the
caller runs them on a thread."""

from __future__ import annotations

import ssl
from collections.abc import Callable
from dataclasses import dataclass

from pydicom.dataset import Dataset
from pynetdicom import AE
from pynetdicom.association import Association
from pynetdicom.sop_class import (  # type: ignore[attr-defined]  # generated at import
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelMove,
)

from archive.config.peers import AEEntry
from dimse.store_scu import DestinationUnavailable, no_delay, tls_args

SUCCESS, PENDING = 0x0000, (0xFF00, 0xFF01)
# what one C-FIND answer may hold in memory: a source that answers without end (broken, or hostile)
# is cancelled past it; a legacy PACS caps a day's answers far below (often 500-5,000)
MAX_FIND_ANSWERS = 50_000
FIND_MESSAGE_ID = 1
CANCEL = 0xFE00
MOVE_DESTINATION_UNKNOWN = 0xA801


class SourceRefused(RuntimeError):
    """The source answered, and no retry will change its answer (e.g. it does not know the destination)."""


@dataclass
class FindAnswer:
    identifiers: list[Dataset]
    status: int  # the final response's status; other than 0x0000: the answer may be cut short


@dataclass
class MoveResult:
    status: int
    completed: int = 0
    failed: int = 0
    warning: int = 0
    comment: str = ""


def open_qr_association(
    own_ae: str, peer_ae: str, peer: AEEntry, timeout: float, tls: ssl.SSLContext | None = None
) -> Association:
    """An association proposing Study Root FIND and MOVE; `timeout` bounds each wait for an answer
    (a C-MOVE's next pending response included)."""
    ae = AE(ae_title=own_ae)
    ae.acse_timeout = ae.network_timeout = 60
    ae.dimse_timeout = timeout
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelMove)
    assert peer.host and peer.port, "the caller checks that the AE table has an address"
    assoc = ae.associate(peer.host, peer.port, ae_title=peer_ae, tls_args=tls_args(peer, tls))
    if not assoc.is_established:
        raise DestinationUnavailable(f"{peer_ae} at {peer.host}:{peer.port} did not accept an association")
    no_delay(assoc)
    return assoc


def find(assoc: Association, identifier: Dataset, max_answers: int = MAX_FIND_ANSWERS) -> FindAnswer:
    """Every pending answer's identifier and the final status (0xA700, 0xC000 or a cancel: cut short).
    Past `max_answers` the source is sent a C-CANCEL and the rest is not kept, whatever it sends:
    the answer then ends as cancelled, which the caller takes as capped (and asks in smaller parts)."""
    answers: list[Dataset] = []
    cancelled = False
    for status, found in assoc.send_c_find(identifier, StudyRootQueryRetrieveInformationModelFind, msg_id=FIND_MESSAGE_ID):
        if status is None or "Status" not in status:
            raise DestinationUnavailable("the source gave no answer to a C-FIND; the association is lost")
        code = int(status.Status)
        if code not in PENDING:
            return FindAnswer(answers, CANCEL if cancelled else code)
        if found is not None and len(answers) < max_answers:
            answers.append(found)
        elif found is not None and not cancelled:
            assoc.send_c_cancel(FIND_MESSAGE_ID, query_model=StudyRootQueryRetrieveInformationModelFind)
            cancelled = True
    return FindAnswer(answers, CANCEL if cancelled else SUCCESS)


def move(assoc: Association, identifier: Dataset, destination: str, progress: Callable[[int], None]) -> MoveResult:
    """A C-MOVE to `destination`; `progress(done so far)` at every pending response."""
    result = MoveResult(SUCCESS)
    for status, _ in assoc.send_c_move(identifier, destination, StudyRootQueryRetrieveInformationModelMove):
        if status is None or "Status" not in status:
            raise DestinationUnavailable("the source gave no answer to a C-MOVE; the association is lost")
        result.status = int(status.Status)
        result.completed = int(status.get("NumberOfCompletedSuboperations", result.completed) or 0)
        result.failed = int(status.get("NumberOfFailedSuboperations", result.failed) or 0)
        result.warning = int(status.get("NumberOfWarningSuboperations", result.warning) or 0)
        result.comment = str(status.get("ErrorComment", "") or "")
        if result.status in PENDING:
            progress(result.completed + result.failed + result.warning)
    return result
