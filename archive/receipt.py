"""Receipt: the one path by which an object enters the archive, for DIMSE and DICOMweb alike.

staged bytes -> header read once (stop before pixels) and validated -> key from tenant and UIDs
-> blob committed (fsync'd) -> index rows committed -> Stored. Only after that may a caller
answer Success; the instance is then visible to queries at once.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from enum import Enum
from typing import Any

from psycopg_pool import AsyncConnectionPool

from archive.attributes import InstanceAttributes, extract
from archive.blobstore import BlobStore, StagedBlob
from archive.header import Header, InvalidObject, read_header
from archive.index.instances import find_instance, insert_instance, mark_nonconformant, replace_instance
from archive.layout import instance_key
from archive.limits import Limits
from archive.part10 import add_missing_meta
from archive.sameness import same_object
from archive.tenants import check_tenant

log = logging.getLogger("dicomflow.receipt")


class Outcome(str, Enum):
    STORED = "stored"  # new instance
    DUPLICATE = "duplicate"  # same UID, same bytes: nothing changed
    REPLACED = "replaced"  # same UID, other bytes, policy "replace"
    CONFLICT = "conflict"  # same UID, other bytes, policy "reject"
    INVALID = "invalid"  # not acceptable; nothing stored
    MISMATCH = "mismatch"  # the dataset is not the object the request named
    FAILED = "failed"  # could not be made durable (storage or index down)

    @property
    def ok(self) -> bool:
        return self in (Outcome.STORED, Outcome.DUPLICATE, Outcome.REPLACED)


@dataclass(frozen=True)
class Receipt:
    outcome: Outcome
    reason: str | None = None
    tenant: str | None = None
    attributes: InstanceAttributes | None = None
    transfer_syntax: str | None = None
    blob_key: str | None = None
    size: int = 0
    sha256: str | None = None
    nonconformance: str | None = None  # stored, but breaks the standard in a harmless way (uid_policy)

    @property
    def needs_workflow(self) -> bool:
        return self.outcome in (Outcome.STORED, Outcome.REPLACED)


class Receiver:
    def __init__(self, blobs: BlobStore, pool: AsyncConnectionPool, duplicate_policy: str = "reject",
                 limits: Limits = Limits(), uid_policy: str = "lenient") -> None:
        self.blobs = blobs
        self.pool = pool
        self.duplicate_policy = duplicate_policy
        self.limits = limits
        self.lenient_uids = uid_policy == "lenient"

    async def receive(self, tenant: str, staged: StagedBlob, source: str, expect_sop_uid: str | None = None,
                      expect_sop_class: str | None = None, expect_study_uid: str | None = None) -> Receipt:
        """Take ownership of `staged`: it is committed under its key or discarded, never left behind."""
        try:
            check_tenant(tenant)
            staged, header, attributes = await asyncio.to_thread(self._prepare, staged)
        except InvalidObject as err:
            self.blobs.discard(staged)
            return Receipt(Outcome.INVALID, str(err), tenant)
        except ValueError as err:  # a bad tenant name
            self.blobs.discard(staged)
            return Receipt(Outcome.INVALID, str(err), tenant)
        except Exception as err:  # noqa: BLE001 - whatever a hostile object provokes refuses it alone
            log.warning("object refused while parsing: %s: %s", type(err).__name__, err)
            self.blobs.discard(staged)
            return Receipt(Outcome.INVALID, f"cannot parse the object: {type(err).__name__}", tenant)
        mismatch = _request_mismatch(attributes, expect_sop_uid or header.meta_sop_instance_uid, expect_sop_class, expect_study_uid)
        if mismatch:
            self.blobs.discard(staged)
            return Receipt(Outcome.MISMATCH, mismatch, tenant)
        try:
            return await self._store(tenant, staged, header, attributes, source)
        except Exception as err:  # noqa: BLE001 - anything here means "not durable": say so, never Success
            log.exception("receipt of %s failed", attributes.sop_uid)
            self.blobs.discard(staged)
            return Receipt(Outcome.FAILED, f"the archive could not store the object: {type(err).__name__}: {err}", tenant, attributes)

    def _same_object(self, key: str, staged: StagedBlob) -> bool:
        return _same_object_at(self.blobs, key, staged)

    def _prepare(self, staged: StagedBlob) -> tuple[StagedBlob, Header, InstanceAttributes]:
        staged = add_missing_meta(self.blobs, staged)
        header = read_header(staged.path, self.limits, self.lenient_uids)
        return staged, header, extract(header.dataset)

    async def _store(self, tenant: str, staged: StagedBlob, header: Header, a: InstanceAttributes, source: str) -> Receipt:
        key = instance_key(tenant, a.study_date, a.study_uid, a.series_uid, a.sop_uid)
        receipt = Receipt(Outcome.STORED, None, tenant, a, header.transfer_syntax, key, staged.size, staged.sha256,
                          header.nonconformance)
        if header.nonconformance:
            log.warning("stored %s in %s although not conformant: %s", a.sop_uid, tenant, header.nonconformance)
        fields: dict[str, Any] = dict(transfer_syntax=
header.transfer_syntax, blob_key=key, size=staged.size, sha256=staged.sha256, source=source)
        for _ in range(2):  # a second pass only when the stored row vanished in between (a DELETE)
            async with self.pool.connection() as conn, conn.transaction():
                # The row goes in first: a concurrent receipt of the same UID waits on it and then
                # finds it, instead of writing over our blob. The transaction commits only after
                # the blob is durable.
                if await insert_instance(conn, tenant, a, **fields):
                    if header.nonconformance:
                        await mark_nonconformant(conn, tenant, a.sop_uid, header.nonconformance)
                    await asyncio.to_thread(self.blobs.commit, staged, key)
                    return receipt
                existing = await find_instance(conn, tenant, a.sop_uid, lock=True)
                if existing is None:
                    continue
                if existing.sha256 == staged.sha256:
                    self.blobs.discard(staged)
                    return Receipt(Outcome.DUPLICATE, "already stored with identical content", tenant, a,
                                   header.transfer_syntax, existing.blob_key, existing.size, existing.sha256)
                if self.duplicate_policy != "replace":
                    if await asyncio.to_thread(self._same_object, existing.blob_key, staged):
                        self.blobs.discard(staged)
                        return Receipt(Outcome.DUPLICATE, "already stored (sent before in another transfer syntax)",
                                       tenant, a, header.transfer_syntax, existing.blob_key, existing.size, existing.sha256)
                    self.blobs.discard(staged)
                    return Receipt(Outcome.CONFLICT,
                                   f"already stored with different content: {a.sop_uid}", tenant, a)
                await asyncio.to_thread(self.blobs.commit, staged, key)
                await replace_instance(conn, tenant, a, **fields)
                if existing.blob_key != key:
                    await asyncio.to_thread(self.blobs.delete, existing.blob_key)
                return Receipt(Outcome.REPLACED, "replaced the stored object with different content", tenant, a,
                               header.transfer_syntax, key, staged.size, staged.sha256)
        self.blobs.discard(staged)
        return Receipt(Outcome.FAILED, "concurrent receipt of the same SOP Instance UID; send again", tenant, a)


def _same_object_at(blobs: BlobStore, key: str, staged: StagedBlob) -> bool:
    try:
        with blobs.local_copy(key) as stored:
            return same_object(stored, staged.path)
    except Exception:  # noqa: BLE001 - whatever cannot be compared is a conflict, as before
        log.info("could not compare a resent object with the stored one", exc_info=True)
        return False


def _request_mismatch(a: InstanceAttributes, sop_uid: str | None, sop_class: str | None, study_uid: str | None) -> str | None:
    """A request names the object (C-STORE command, STOW path); the dataset must be that object."""
    if sop_uid is not None and a.sop_uid != sop_uid:
        return f"SOP Instance UID differs from the request: dataset {a.sop_uid}, request or File Meta {sop_uid}"
    if sop_class is not None and a.sop_class_uid != sop_class:
        return f"SOP Class UID differs from the request: dataset {a.sop_class_uid}, request {sop_class}"
    if study_uid is not None and a.study_uid != study_uid:
        return f"Study Instance UID differs from the request path: dataset {a.study_uid}, path {study_uid}"
    return None
