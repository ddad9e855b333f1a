"""Receipt: the one path by which an object enters the archive, for DIMSE and DICOMweb alike.

staged bytes -> header read once (stop before pixels) and validated -> a new key from tenant, UIDs
and a write id -> blob committed (fsync'd) -> index rows committed -> Stored. Only after that may a
caller answer Success; the instance is then visible to queries at once. Stored bytes are never
written over: a replacement or repair gets its own key and the superseded blob goes after the commit.
Receipt never decodes pixels itself: other bytes under a stored SOP Instance UID are compared with
the stored object by a decode pool worker, between two transactions (archive/pixels/sameness.py), so an
untrusted codestream costs neither this process's memory nor a lock held while it is decoded.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from dataclasses import dataclass
from enum import Enum
from typing import Any

from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from archive.blobstore import BlobNotFound, BlobStore, StagedBlob
from archive.blobstore.layout import instance_key, new_write_id
from archive.config.sections import DECODE_FRAME_FACTOR
from archive.dicom.attributes import InstanceAttributes, extract
from archive.dicom.header import Header, InvalidObject, read_header
from archive.dicom.part10 import add_missing_meta
from archive.dicom.rejection_note import (
    KEY_OBJECT_SELECTION,
    REJECTED_OBJECT,
    RejectionNote,
    RejectionRefused,
    rejected_again,
    rejection_note,
)
from archive.identity.tenants import check_tenant
from archive.index.blob_removals import queue_removals
from archive.index.instance_state import InstanceState
from archive.index.instances import (
    StoredInstance,
    bump_series,
    find_instance,
    insert_instance,
    mark_nonconformant,
    point_at_blob,
    replace_instance,
    reset_failed,
)
from archive.index.locks import lock_study
from archive.index.rejections import apply_rejection, rejected_before
from archive.pixels.decode_pool import DecodePool, DecodeRefused, shared_pool
from archive.pixels.limits import INTERPRETER_BYTES, DecodeLimits, Limits
from archive.pixels.sameness import same_object
from archive.services.quota import QuotaGate
from archive.services.removals import remove_queued

log = logging.getLogger("dicomflow.receipt")
# a receipt whose UID is taken by other bytes compares outside the transaction, then confirms
# under the lock that the row still names what it compared with; each pass past the first is a
# concurrent change to that row (a DELETE, a replacement)
MAX_PASSES = 4


class Outcome(str, Enum):
    STORED = "stored"  # new instance
    DUPLICATE = "duplicate"  # same UID, same bytes: nothing changed
    REPLACED = "replaced"  # same UID, other bytes, policy "replace"
    CONFLICT = "conflict"  # same UID, other bytes, policy "reject"
    INVALID = "invalid"  # not acceptable; nothing stored
    MISMATCH = "mismatch"  # the dataset is not the object the request named
    FAILED = "failed"  # could not be made durable (storage or index down)
    REFUSED = "refused"  # IOCM: a rejected instance sent again, or a rejection note that cannot apply
    QUOTA = "quota"  # the tenant is over its storage quota; nothing stored

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
    reprocess: bool = False  # a failed instance repaired by its resent bytes: its workflow runs again
    status: int | None = None  # the DICOM status when the outcome's usual one is not specific enough
    rejected: int = 0  # a rejection note: how many instances it withdrew
    rejection_code: str | None = None  # a rejection note: its CID 7011 code

    @property
    def needs_workflow(self) -> bool:
        return self.outcome in (Outcome.STORED, Outcome.REPLACED) or self.reprocess


class Receiver:
    def __init__(
        self,
        blobs: BlobStore,
        pool: AsyncConnectionPool,
        duplicate_policy: str = "reject",
        limits: Limits = Limits(),
        uid_policy: str = "lenient",
        decoder: DecodePool | None = None,
        quota: QuotaGate | None = None,
    ) -> None:
        self.blobs = blobs
        self.quota = quota
        self.pool = pool
        self.duplicate_policy = duplicate_policy
        self.limits = limits
        self.lenient_uids = uid_policy == "lenient"
        # compares a re-sent object's pixels with the stored one's (workers start on first use)
        self.decoder = decoder or shared_pool(_default_decode_limits(limits))

    async def receive(
        self,
        tenant: str,
        staged: StagedBlob,
        source: str,
        expect_sop_uid: str | None = None,
        expect_sop_class: str | None = None,
        expect_study_uid: str | None = None,
    ) -> Receipt:
        """Take ownership of `staged`: it is committed under its key or discarded, never left behind."""
        prepared = await asyncio.to_thread(self.prepare, tenant, staged, expect_sop_uid, expect_sop_class, expect_study_uid)
        if isinstance(prepared, Receipt):
            return prepared
        return await self.store(prepared, source)

    def prepare(
        self,
        tenant: str,
        staged: StagedBlob,
        expect_sop_uid: str | None = None,
        expect_sop_class: str | None = None,
        expect_study_uid: str | None = None,
    ) -> Prepared | Receipt:
        """Parse and check on the calling thread (a DIMSE association's own, or a worker thread); a
        refusal's Receipt when the object is not acceptable, its staged bytes then discarded."""
        try:
            check_tenant(tenant)
            staged = add_missing_meta(self.blobs, staged)
            header = read_header(staged.path, self.limits, self.lenient_uids)
            attributes = extract(header.dataset)
            rejection = self._rejection_note(staged, attributes)  # applied in the receipt's transaction
        except InvalidObject as err:
            self.blobs.discard(staged)
            return Receipt(Outcome.INVALID, str(err), tenant)
        except ValueError as err:  # a bad tenant name, a value pydicom refuses to read, a bad rejection note
            self.blobs.discard(staged)
            return Receipt(Outcome.INVALID, str(err), tenant)
        except Exception as err:  # noqa: BLE001 - whatever a hostile object provokes refuses it alone
            log.warning("object refused while parsing: %s: %s", type(err).__name__, err)
            self.blobs.discard(staged)
            return Receipt(Outcome.INVALID, f"cannot parse the object: {type(err).__name__}", tenant)
        mismatch = _request_mismatch(
            attributes, expect_sop_uid or header.meta_sop_instance_uid, expect_sop_class, expect_study_uid
        )
        if mismatch:
            self.blobs.discard(staged)
            return Receipt(Outcome.MISMATCH, mismatch, tenant)
        # the data's fsync here, on the receiving thread, so the receipt's transaction (its pooled
        # connection, and the new study's and series' rows other receipts wait on) is not held across it
        try:
            staged = self.blobs.make_durable(staged)
        except OSError as err:
            self.blobs.discard(staged)
            return Receipt(Outcome.FAILED, f"the archive could not store the object: {type(err).__name__}: {err}", tenant)
        return Prepared(tenant, staged, header, attributes, rejection)

    def _rejection_note(self, staged: StagedBlob, a: InstanceAttributes) -> RejectionNote | None:
        """An IOCM rejection note's withdrawals. Receipt reads only the attributes it indexes; a Key
        Object Selection document (rare, and small) is read whole to find what it references."""
        if a.sop_class_uid != KEY_OBJECT_SELECTION:
            return None
        return rejection_note(read_header(staged.path, self.limits, self.lenient_uids, whole=True).dataset)

    async def store(self, prepared: Prepared, source: str) -> Receipt:
        """Make a prepared object durable and indexed (or find it already stored)."""
        tenant, staged, attributes = prepared.tenant, prepared.staged, prepared.attributes
        over = await self.quota.refusal(tenant, staged.size) if self.quota else None
        if over:
            self.blobs.discard(staged)
            return Receipt(Outcome.QUOTA, over, tenant, attributes)
        try:
            return await self._store(prepared, source)
        except RejectionRefused as err:  # IOCM: its transaction rolled back
            self.blobs.discard(staged)
            return Receipt(Outcome.REFUSED, err.reason, tenant, attributes, status=err.status)
        except Exception as err:  # noqa: BLE001 - anything here means "not durable": say so, never Success
            log.exception("receipt of %s failed", attributes.sop_uid)
            self.blobs.discard(staged)
            return Receipt(
                Outcome.FAILED, f"the archive could not store the object: {type(err).__name__}: {err}", tenant, attributes
            )

    async def _store(self, prepared: Prepared, source: str) -> Receipt:
        tenant, staged, header, a = prepared.tenant, prepared.staged, prepared.header, prepared.attributes
        if header.nonconformance:
            log.warning("stored %s in %s although not conformant: %s", a.sop_uid, tenant, header.nonconformance)
        # a fresh key for every write: stored bytes are never written over (archive/blobstore/layout.py)
        key = instance_key(tenant, a.study_date, a.study_uid, a.series_uid, a.sop_uid, new_write_id())
        write = _Write(
            tenant,
            staged,
            header,
            a,
            dict(transfer_syntax=header.transfer_syntax, blob_key=key, size=staged.size, sha256=staged.sha256, source=source),
            prepared.rejection,
        )
        verdict: _Verdict | None = None
        for _ in range(MAX_PASSES):
            settled = await self._attempt(write, verdict)
            if settled is None:  # the stored row vanished in between (a DELETE): try again
                continue
            if isinstance(settled, StoredInstance):  # other bytes under this UID: compare with no lock held
                compared = await asyncio.to_thread(self._compare, settled, write)
                if isinstance(compared, Receipt):
                    self.blobs.discard(staged)
                    return compared
                verdict = compared
                continue
            receipt, superseded = settled
            if superseded:
                await remove_queued(self.pool, self.blobs, superseded, "a superseded object")
            return receipt
        self.blobs.discard(staged)
        return Receipt(Outcome.FAILED, "concurrent receipt of the same SOP Instance UID; send again", tenant, a)

    async def _attempt(self, w: _Write, verdict: _Verdict | None) -> tuple[Receipt, list[str]] | StoredInstance | None:
        """One transaction: the receipt and the blobs it superseded (to remove once it committed);
        None when the row it collided with is gone; the stored row when its object must first be
        compared with this one (`verdict`, from an earlier pass, when it was)."""
        # Not pipelined: psycopg's async pipeline polls its socket for writing while it waits for
        # the answer, and spun the SCP's event loop (1.0 ms of CPU per instance with 4 associations,
        # bench/profile_ingest.py); four plain round trips on loopback cost less CPU and less time
        async with self.pool.connection() as conn, conn.transaction():
            await lock_study(conn, w.tenant, w.a.study_uid)
            # The row goes in first: a concurrent receipt of the same UID waits on it and then
            # finds it. The transaction commits only after the blob is durable.
            if await insert_instance(conn, w.tenant, w.a, **w.fields):
                if w.header.nonconformance:
                    await mark_nonconformant(conn, w.tenant, w.a.sop_uid, w.header.nonconformance)
                rejected = await apply_rejection(conn, w.tenant, w.a.sop_uid, w.a.study_uid, w.rejection) if w.rejection else 0
                await asyncio.to_thread(self.blobs.commit, w.staged, w.key)
                # no series version bump: a new instance changes the series' count, which metadata
                # freshness also compares, and concurrent receipts into one series do not queue on its row
                receipt = w.receipt(Outcome.STORED)
                if w.rejection:
                    receipt = dataclasses.replace(receipt, rejected=rejected, rejection_code=w.rejection.code)
                return receipt, []
            existing = await find_instance(conn, w.tenant, w.a.sop_uid, lock=True)
            if existing is None:
                return None
            if existing.state == InstanceState.REJECTED:  # IOCM: withdrawn, and stays so until restored
                code = await rejected_before(conn, w.tenant, w.a.sop_uid)
                raise RejectionRefused(REJECTED_OBJECT, rejected_again(code or "unknown"))
            if existing.sha256 == w.staged.sha256:
                return await self._identical(conn, w, existing)
            if self.duplicate_policy == "replace":
                return await self._replace(conn, w, existing), _keys(existing.blob_key, existing.transcoded_key)
            if verdict is None or verdict.blob_key != existing.blob_key:
                return existing  # decoding waits for no lock and holds none
            return self._refuse_or_match(w, existing, verdict), []

    async def _identical(self, conn: AsyncConnection, w: _Write, existing: StoredInstance) -> tuple[Receipt, list[str]]:
        """The same bytes again: nothing to do, unless what is stored is damaged; then they repair it."""
        damage = await asyncio.to_thread(self._damage, existing)
        if damage is None:
            self.blobs.discard(w.staged)
            return (
                Receipt(
                    Outcome.DUPLICATE,
                    "already stored with identical content",
                    w.tenant,
                    w.a,
                    w.header.transfer_syntax,
                    existing.blob_key,
                    existing.size,
                    existing.sha256,
                ),
                [],
            )
        await asyncio.to_thread(self.blobs.commit, w.staged, w.key)
        await point_at_blob(conn, w.tenant, w.a.sop_uid, w.key)
        reprocess = await reset_failed(conn, w.tenant, existing.study_uid, w.a.sop_uid)
        if reprocess:
            await bump_series(conn, w.tenant, [existing.series_uid])
        log.warning("resent %s in %s repaired it: %s", w.a.sop_uid, w.tenant, damage)
        receipt = w.receipt(Outcome.DUPLICATE, f"already stored; the resent bytes repaired it ({damage})")
        return dataclasses.replace(receipt, reprocess=reprocess), [existing.blob_key]

    def _damage(self, existing: StoredInstance) -> str | None:
        if existing.state == "failed":
            return "it had failed verification"
        try:
            size = self.blobs.size(existing.blob_key)
        except BlobNotFound:
            return "its stored object was missing"
        return None if size == existing.size else f"its stored object had {size} bytes, not {existing.size}"

    async def _replace(self, conn: AsyncConnection, w: _Write, existing: StoredInstance) -> Receipt:
        """New bytes under a new key, then the row moved to them; the old object goes only after the
        commit. A crash anywhere leaves the row naming an object that is there: the old or the new."""
        await asyncio.to_thread(self.blobs.commit, w.staged, w.key)
        await replace_instance(conn, w.tenant, w.a, **w.fields)
        if w.header.nonconformance:
            await mark_nonconformant(conn, w.tenant, w.a.sop_uid, w.header.nonconformance)
        await bump_series(conn, w.tenant, sorted({existing.series_uid, w.a.series_uid}))
        await queue_removals(conn, _keys(existing.blob_key, existing.transcoded_key), "replaced")
        return w.receipt(Outcome.REPLACED, "replaced the stored object with different content")

    def _compare(self, existing: StoredInstance, w: _Write) -> _Verdict | Receipt:
        """Whether the received object is the stored one in another encoding, decided by a decode
        worker; a refusal's Receipt when the received object is broken (INVALID) or the pool cannot
        answer now (FAILED: the sender may try again)."""
        try:
            with self.blobs.local_copy(existing.blob_key) as stored:
                compared = same_object(self.decoder, stored, w.staged.path)
        except DecodeRefused as err:
            if err.reason in ("busy", "unavailable"):
                return Receipt(Outcome.FAILED, f"could not compare with the stored object now ({err}); send again", w.tenant, w.a)
            return _Verdict(existing.blob_key, False, f"its pixels could not be compared with the stored object's: {err}")
        except Exception:  # noqa: BLE001 - whatever cannot be compared is a conflict, as before
            log.info("could not compare a resent object with the stored one", exc_info=True)
            return _Verdict(existing.blob_key, False)
        if compared.refusal:  # the received object is broken, whatever is stored
            return Receipt(Outcome.INVALID, compared.refusal, w.tenant, w.a)
        return _Verdict(existing.blob_key, compared.same)

    def _refuse_or_match(self, w: _Write, existing: StoredInstance, verdict: _Verdict) -> Receipt:
        self.blobs.discard(w.staged)
        if verdict.same:
            return Receipt(
                Outcome.DUPLICATE,
                "already stored (sent before in another transfer syntax)",
                w.tenant,
                w.a,
                w.header.transfer_syntax,
                existing.blob_key,
                existing.size,
                existing.sha256,
            )
        why = f" ({verdict.reason})" if verdict.reason else ""
        return Receipt(Outcome.CONFLICT, f"already stored with different content: {w.a.sop_uid}{why}", w.tenant, w.a)


@dataclass(frozen=True)
class Prepared:
    """An object parsed and checked, not yet stored: its staged bytes wait for `Receiver.store`."""

    tenant: str
    staged: StagedBlob
    header: Header
    attributes: InstanceAttributes
    rejection: RejectionNote | None = None  # an IOCM rejection note: what it withdraws


@dataclass(frozen=True)
class _Verdict:
    """What comparing with the stored object `blob_key` found, before the row was locked again."""

    blob_key: str
    same: bool
    reason: str | None = None


@dataclass(frozen=True)
class _Write:
    """One object on its way in: what the steps of a receipt share."""

    tenant: str
    staged: StagedBlob
    header: Header
    a: InstanceAttributes
    fields: dict[str, Any]
    rejection: RejectionNote | None = None

    @property
    def key(self) -> str:
        return str(self.fields["blob_key"])

    def receipt(self, outcome: Outcome, reason: str | None = None) -> Receipt:
        return Receipt(
            outcome,
            reason,
            self.tenant,
            self.a,
            self.header.transfer_syntax,
            self.key,
            self.staged.size,
            self.staged.sha256,
            self.header.nonconformance,
        )


async def _rejection_code(conn: AsyncConnection, tenant: str, sop_uid: str) -> str:
    row = await (
        await conn.execute("SELECT code FROM rejection WHERE tenant = %s AND sop_uid = %s", (tenant, sop_uid))
    ).fetchone()
    return str(row[0]) if row else "unknown"


def _keys(*keys: str | None) -> list[str]:
    return [k for k in keys if k]


def _default_decode_limits(limits: Limits) -> DecodeLimits:
    """Settings.decode_limits' defaults, for a Receiver made without settings (tools, tests)."""
    return DecodeLimits(INTERPRETER_BYTES + DECODE_FRAME_FACTOR * limits.max_frame_bytes, 60.0, 2)


def _request_mismatch(a: InstanceAttributes, sop_uid: str | None, sop_class: str | None, study_uid: str | None) -> str | None:
    """A request names the object (C-STORE command, STOW path); the dataset must be that object."""
    if sop_uid is not None and a.sop_uid != sop_uid:
        return f"SOP Instance UID differs from the request: dataset {a.sop_uid}, request or File Meta {sop_uid}"
    if sop_class is not None and a.sop_class_uid != sop_class:
        return f"SOP Class UID differs from the request: dataset {a.sop_class_uid}, request {sop_class}"
    if study_uid is not None and a.study_uid != study_uid:
        return f"Study Instance UID differs from the request path: dataset {a.study_uid}, path {study_uid}"
    return None
