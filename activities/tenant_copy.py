"""A forward into another tenant of this archive (to = { tenant = "name" }): each owed instance is
received into the target tenant through the receipt code path every C-STORE and STOW-RS takes
(parsed, stored durably, indexed, its study workflow signalled), with no network in between. The
copy keeps its UIDs (de-identified: the ones the destination's key gives), so the target tenant
holds the same study, processed by a study workflow of its own."""

from __future__ import annotations

import io
from collections.abc import Awaitable, Callable
from typing import Protocol

from pydicom import dcmread
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.context import ActivityContext
from archive.blobstore import BlobNotFound, StagedBlob
from archive.dicom import dicom_status as st
from archive.index import retrieves
from archive.index.retrieves import COMPLETED, FAILED, ItemToSend
from archive.index.slots import NoSlotFree, destination_slot
from archive.routing.deidentify import NotReleasable, deidentify, destination_key
from archive.routing.registry import rule_in_force
from archive.routing.rules import ForwardTarget
from archive.services.receipt import Outcome, Receipt
from contract import names
from contract.payloads import ForwardRequest, ForwardSend

BATCH = 20
ItemOutcome = tuple[int, str, int | None]  # (position, state, status) of one item


class Receipts(Protocol):
    """The receiving side's door (receiving.ingest.Ingest), handed in by the worker host."""

    async def receive(self, tenant: str, staged: StagedBlob, source: str) -> Receipt: ...

    async def flush(self, studies: set[tuple[str, str]] | None = None, settled: bool = False) -> None: ...


class TenantCopyActivities:
    def __init__(self, ctx: ActivityContext, receipts: Callable[[], Awaitable[Receipts]]) -> None:
        self.ctx = ctx
        self._receipts = receipts  # opened on first use: most workers never copy

    def all(self) -> list:
        return [self.send]

    @activity.defn(name=names.FORWARD_COPY_SEND)
    async def send(self, job: ForwardSend) -> int:
        """How many this attempt copied; raises (to be retried) while the target cannot store."""
        target = await self._target(job)
        receipts = await self._receipts()
        try:  # a slot of the target bounds the copies into it at once, so copying never starves receipt
            async with destination_slot(
                self.ctx.settings.effective_postgres_dsn(), job.request.destination_ae, target.max_associations
            ):
                return await self._copy_owed(receipts, str(target.tenant), job)
        except NoSlotFree as err:
            raise ApplicationError(str(err)) from None
        finally:
            await receipts.flush(settled=True)  # the copied studies' workflows process them now, without waiting for quiet

    async def _target(self, job: ForwardSend) -> ForwardTarget:
        """The tenant to copy into, from the rule in force and what the round recorded, not from the
        request: a workflow started by anyone who reached Temporal must not copy one tenant elsewhere."""
        request: ForwardRequest = job.request
        rule = await rule_in_force(self.ctx.settings.routing, self.ctx.pool, request.rule)
        recorded = await retrieves.recorded_as(self.ctx.pool, job.retrieve.retrieve_id)
        if (
            rule is None
            or rule.to.tenant is None
            or not rule.applies_to(request.tenant)
            or rule.to.destination != request.destination_ae
            or recorded != (request.tenant, request.destination_ae)
        ):
            raise ApplicationError(
                f"no forward rule {request.rule!r} copying tenant {request.tenant!r} into {request.destination_ae!r} is in force",
                non_retryable=True,
            )
        return rule.to

    async def _copy_owed(self, receipts: Receipts, target: str, job: ForwardSend) -> int:
        copied = 0
        while items := await retrieves.pending(self.ctx.pool, job.retrieve.retrieve_id, BATCH):
            outcomes = [await self._copy_one(receipts, target, job.request, item) for item in items]
            await retrieves.record_outcomes(self.ctx.pool, job.retrieve.retrieve_id, outcomes)
            copied += sum(1 for _, state, _ in outcomes if state == COMPLETED)
            activity.heartbeat(items[-1].position)
        return copied

    async def _copy_one(self, receipts: Receipts, target: str, request: ForwardRequest, item: ItemToSend) -> ItemOutcome:
        staged = await self.ctx.in_background(self._staged, request, item)
        if isinstance(staged, int):
            return item.position, FAILED, staged
        receipt = await receipts.receive(target, staged, f"forward:{request.tenant}:{request.rule}")
        if receipt.outcome is Outcome.FAILED:  # storage or index down: this attempt ends, the next resumes here
            raise ApplicationError(f"copy of {item.sop_uid} into tenant {target!r} failed: {receipt.reason}")
        return item.position, COMPLETED if receipt.outcome.ok else FAILED, st.receipt_status(receipt.outcome)

    def _staged(self, request: ForwardRequest, item: ItemToSend) -> StagedBlob | int:
        """The bytes to receive, staged in the spool (de-identified when the rule says so); or the
        status that says why there are none."""
        if item.blob_key is None:
            return st.NO_SUCH_OBJECT_INSTANCE  # deleted since the round was listed
        blobs = self.ctx.blobs
        try:
            if not request.deidentify:
                return blobs.stage_stream(blobs.iter_chunks(item.blob_key))
            return blobs.stage_bytes(self._deidentified(request, blobs.read_bytes(item.blob_key)))
        except BlobNotFound:
            return st.NO_SUCH_OBJECT_INSTANCE
        except NotReleasable:
            return st.PROCESSING_FAILURE

    def _deidentified(self, request: ForwardRequest, stored: bytes) -> bytes:
        secret = self.ctx.settings.effective_deidentify_key()
        if not secret:
            raise ApplicationError("de-identified forwards need deidentify_key (made by `dicomflow up`)", non_retryable=True)
        ds = dcmread(io.BytesIO(stored))
        deidentify(ds, request.deidentify, destination_key(secret, request.destination_ae))
        out = io.BytesIO()
        ds.save_as(out, enforce_file_format=True)
        return out.getvalue()
