"""C-GET SCP: the instances go back on the requester's own association, as C-STORE sub-operations
on the storage contexts it offered to receive (SCP role), decompressed when it accepted none of
the stored transfer syntax. pynetdicom does the sub-operation accounting; an object that goes as
stored is written straight to the socket (dimse/stored_send), the others by pynetdicom."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import TYPE_CHECKING

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import UID
from pynetdicom import evt

from actors.dimse_find import identified_instances
from actors.dimse_status import Response, failure
from archive.audit import AuditAction
from archive.audit import Outcome as AuditOutcome
from archive.blobstore import BlobNotFound
from archive.dicom import dicom_status as st
from archive.index.reads import StoredObject, objects_named_by
from archive.pixels.decode_pool import DecodeRefused, shared_pool
from archive.query.retrieve import MAX_INSTANCES
from archive.services.outbound import NoCommonSyntax, dataset_to_send
from dimse import reactor
from dimse.stored_send import StoredToSend, send_as_stored

if TYPE_CHECKING:
    from actors.dimse_context import DimseContext

log = logging.getLogger("dicomflow.scp.get")

GET_MODELS = {
    "1.2.840.10008.5.1.4.1.2.1.3": "patient",  # Patient Root Q/R Information Model - GET
    "1.2.840.10008.5.1.4.1.2.2.3": "study",  # Study Root Q/R Information Model - GET
}


def _unsendable(obj: StoredObject) -> Dataset:
    """Just enough for pynetdicom to find no context for it and count it failed, under its UID."""
    ds = Dataset()
    ds.SOPClassUID, ds.SOPInstanceUID = obj.sop_class_uid, obj.sop_uid
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = UID(obj.transfer_syntax)
    return ds


class GetService:
    def __init__(self, ctx: DimseContext) -> None:
        self.ctx = ctx

    def on_get(self, event: evt.Event) -> Iterator[int | Response]:
        found = self._find(event)
        if isinstance(found, tuple):  # refused: one failed sub-operation carries the reason
            yield 1
            yield found
            return
        objects = found
        yield len(objects)
        reactor.hurry(event.assoc)
        send_as_stored(event.assoc, self.ctx.blobs)
        accepted = self._accepted(event)
        for obj in objects:
            if event.is_cancelled:
                yield st.CANCEL, None
                return
            yield st.PENDING, self._prepare(obj, accepted.get(obj.sop_class_uid, set()))

    def _find(self, event: evt.Event) -> list[StoredObject] | Response:
        allowed = self.ctx.gate.allowed(event, "get")
        if isinstance(allowed, Dataset):
            return allowed, None
        association, tenant = allowed
        named = identified_instances(event, tenant, GET_MODELS)
        if isinstance(named, Dataset):
            return named, None
        sql, params = named
        objects = self.ctx.loop.run(objects_named_by(self.ctx.pool, tenant, sql, params), timeout=120)
        if len(objects) > MAX_INSTANCES:
            return failure(st.OUT_OF_RESOURCES_MATCHES, f"more than {MAX_INSTANCES} instances match; ask for less")
        studies = sorted({o.study_uid for o in objects})
        self.ctx.gate.audit(
            association.caller,
            AuditAction.RETRIEVE,
            AuditOutcome.SUCCESS,
            tenant,
            studies[0] if len(studies) == 1 else None,
            service="C-GET",
            instances=len(objects),
            studies=studies[:100],
        )
        return objects

    @staticmethod
    def _accepted(event: evt.Event) -> dict[str, set[str]]:
        """Per SOP class, the transfer syntaxes of the contexts on which we may send C-STOREs."""
        out: dict[str, set[str]] = {}
        for cx in event.assoc.accepted_contexts:
            if cx.as_scu:
                out.setdefault(str(cx.abstract_syntax), set()).add(str(cx.transfer_syntax[0]))
        return out

    def _prepare(self, obj: StoredObject, accepted: set[str]) -> Dataset:
        if obj.transfer_syntax in accepted:
            return StoredToSend(obj.sop_class_uid, obj.sop_uid, obj.blob_key)
        try:
            blobs = self.ctx.blobs
            with blobs.local_copy(obj.blob_key) as path:
                return dataset_to_send(
                    path, obj.transfer_syntax, accepted, shared_pool(self.ctx.settings.decode.pool_limits), blobs.spool_dir
                )
        except (NoCommonSyntax, DecodeRefused) as err:
            log.warning("C-GET: %s not sent: %s", obj.sop_uid, err)
        except BlobNotFound:
            log.warning("C-GET: %s has no stored object (deleted meanwhile?)", obj.sop_uid)
        return _unsendable(obj)
