"""C-GET sub-operations of objects that go as stored: written straight to the requester's socket
(dimse/direct_store) instead of being decoded and re-encoded by pynetdicom.

pynetdicom's C-GET service calls `assoc.send_c_store(dataset)` for each dataset the EVT_C_GET
handler yields and does the sub-operation accounting on the answer; it has no hook for sending a
file as it is. So `send_as_stored` replaces that one association's `send_c_store`: a
`StoredToSend` goes from its file, anything else through pynetdicom unchanged.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from pydicom import dcmread
from pydicom.dataset import Dataset
from pynetdicom.association import Association

from archive.blobstore import BlobNotFound, BlobStore
from dimse.direct_store import DirectStoreUnavailable, send_file

log = logging.getLogger("dicomflow.scp.get")


class StoredToSend(Dataset):
    """An object that goes as stored; it carries the UIDs pynetdicom counts sub-operations by."""

    def __init__(self, sop_class_uid: str, sop_uid: str, blob_key: str) -> None:
        super().__init__()
        self.SOPClassUID, self.SOPInstanceUID = sop_class_uid, sop_uid
        self.blob_key = blob_key


def send_as_stored(assoc: Association, blobs: BlobStore) -> None:
    """From now on this association sends a `StoredToSend` from its file, straight to the socket
    where it can, through pynetdicom otherwise; any other dataset goes through pynetdicom."""
    if getattr(assoc, "sends_as_stored", False):
        return  # a later C-GET on the same association: wrapping again would nest without end
    through_pynetdicom: Callable[..., Dataset] = assoc.send_c_store

    def send_c_store(dataset: Dataset, msg_id: int = 1, **kwargs: object) -> Dataset:
        if not isinstance(dataset, StoredToSend):
            return through_pynetdicom(dataset, msg_id=msg_id, **kwargs)
        answer = Dataset()
        try:
            with blobs.local_copy(dataset.blob_key) as path:
                try:
                    status = send_file(assoc, path, msg_id)
                except DirectStoreUnavailable:
                    return through_pynetdicom(dcmread(path), msg_id=msg_id, **kwargs)
        except BlobNotFound:
            log.warning("C-GET: %s has no stored object (deleted meanwhile?)", dataset.SOPInstanceUID)
            return answer  # no Status: pynetdicom counts a failed sub-operation
        if status is not None:
            answer.Status = status
        return answer

    assoc.send_c_store = send_c_store  # type: ignore[method-assign,assignment]
    assoc.sends_as_stored = True  # type: ignore[attr-defined]
