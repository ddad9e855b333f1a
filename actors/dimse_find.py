"""C-FIND SCP (Patient Root, Study Root and Modality Worklist): the identifier becomes the
archive's one query, and the rows stream back as pending responses a batch at a time; C-CANCEL is
honoured between rows."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING

from pydicom.dataset import Dataset
from pynetdicom import evt

from actors.dimse_status import Response, failure, status
from archive.audit import AuditAction
from archive.audit import Outcome as AuditOutcome
from archive.dicom import dicom_status as st
from archive.index.row_stream import RowStream
from archive.query.builder import BadQuery
from archive.query.cfind import FindRequest, answer, parse_identifier
from archive.query.mwl import WORKLIST_FIND, WorklistRequest, answer_worklist, parse_worklist_identifier
from archive.query.retrieve import instances_query

if TYPE_CHECKING:
    from actors.dimse_context import DimseContext

log = logging.getLogger("dicomflow.scp.find")

# the information model each SOP class searches: its root
QUERY_MODELS = {
    "1.2.840.10008.5.1.4.1.2.1.1": "patient",  # Patient Root Q/R Information Model - FIND
    "1.2.840.10008.5.1.4.1.2.2.1": "study",  # Study Root Q/R Information Model - FIND
}


def identified_instances(event: evt.Event, tenant: str, models: dict[str, str]) -> tuple[str, list] | Dataset:
    """C-MOVE / C-GET: the SQL listing the instances the identifier names, or the failure status."""
    model = models.get(str(event.request.AffectedSOPClassUID))
    identifier = decode_identifier(event)
    if model is None or identifier is None:
        return status(st.CANNOT_UNDERSTAND, "identifier cannot be decoded")
    try:
        return instances_query(identifier, tenant, model)
    except BadQuery as err:
        return status(st.IDENTIFIER_DOES_NOT_MATCH, str(err))


def decode_identifier(event: evt.Event) -> Dataset | None:
    try:
        return event.identifier
    except Exception:  # noqa: BLE001 - an identifier pydicom cannot decode is the peer's error
        log.warning("undecodable identifier from %s", event.assoc.requestor.ae_title, exc_info=True)
        return None


SEARCHES_AT_ONCE = 4  # each open search holds an index connection that C-STOREs also need
SEARCH_WAIT_SECONDS = 30


class FindService:
    def __init__(self, ctx: DimseContext) -> None:
        self.ctx = ctx
        self._searches = threading.BoundedSemaphore(SEARCHES_AT_ONCE)

    def on_find(self, event: evt.Event) -> Iterator[Response]:
        worklist = str(event.request.AffectedSOPClassUID) == WORKLIST_FIND
        allowed = self.ctx.gate.allowed(event, "worklist" if worklist else "find")
        if isinstance(allowed, Dataset):
            yield allowed, None
            return
        association, tenant = allowed
        model = "worklist" if worklist else QUERY_MODELS.get(str(event.request.AffectedSOPClassUID))
        identifier = decode_identifier(event)
        if model is None or identifier is None:
            yield failure(st.CANNOT_UNDERSTAND, "identifier cannot be decoded" if model else "unsupported model")
            return
        try:
            request = parse_worklist_identifier(identifier, tenant) if worklist else parse_identifier(identifier, tenant, model)
        except BadQuery as err:
            yield failure(st.IDENTIFIER_DOES_NOT_MATCH, str(err))
            return
        self.ctx.gate.audit(
            association.caller,
            AuditAction.QUERY,
            AuditOutcome.SUCCESS,
            tenant,
            level="WORKLIST" if worklist else getattr(request, "level", None),
            keys=_match_values(identifier),
        )
        yield from self._stream(event, request)

    def _stream(self, event: evt.Event, request: FindRequest | WorklistRequest) -> Iterator[Response]:
        """Rows as pending answers; a client that reads slowly holds one of SEARCHES_AT_ONCE slots,
        never the connections receipt needs."""
        if not self._searches.acquire(timeout=SEARCH_WAIT_SECONDS):
            yield failure(st.OUT_OF_RESOURCES, f"more than {SEARCHES_AT_ONCE} searches at once; try again")
            return
        try:
            yield from self._rows(event, request)
        finally:
            self._searches.release()

    def _rows(self, event: evt.Event, request: FindRequest | WorklistRequest) -> Iterator[Response]:
        loop, ae_title = self.ctx.loop, self.ctx.settings.dimse.ae_title
        implicit_vr, little_endian = _encoding(event)
        stream = RowStream(self.ctx.pool, request.query.sql, request.query.params)
        try:  # a search that fails to open gives its connection back too
            loop.run(stream.open(), timeout=30)
            while rows := loop.run(stream.next_batch(), timeout=180):
                for row in rows:
                    if event.is_cancelled:
                        yield st.CANCEL, None
                        return
                    if isinstance(request, WorklistRequest):
                        yield st.PENDING, answer_worklist(request, row)
                    else:
                        yield st.PENDING, answer(request, row, ae_title, implicit_vr=implicit_vr, little_endian=little_endian)
        finally:
            loop.run(stream.close(), timeout=30)
        yield st.SUCCESS, None


def _encoding(event: evt.Event) -> tuple[bool | None, bool]:
    """(implicit VR?, little endian?) of the presentation context the answers are written in;
    (None, True) when the transfer syntax does not say (answers are then built generically)."""
    syntax = event.context.transfer_syntax
    try:
        return bool(syntax.is_implicit_VR), bool(syntax.is_little_endian)
    except ValueError:
        return None, True


def _match_values(identifier: Dataset) -> dict[str, str]:
    """The keys that narrowed the search, for the audit trail (PS3.15 A.5.3.10 records the query)."""
    out = {}
    for element in identifier:
        if element.VR != "SQ" and element.value not in (None, "", b"") and element.keyword:
            out[element.keyword] = str(element.value)[:128]
    return out
