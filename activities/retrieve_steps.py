"""Retrieve (C-MOVE) steps: send what is still owed to the destination, then close the books.

Each acknowledgement is written to the index before the next instance goes, so an attempt that
dies (worker killed, destination gone) is retried from the first unacknowledged instance.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import ssl
import threading
import time
from collections.abc import Callable
from pathlib import Path

from pydicom import dcmread
from pydicom.dataset import Dataset
from pynetdicom.association import Association
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.context import ActivityContext
from archive.config.peers import AEEntry
from archive.config.settings import Settings
from archive.dicom import dicom_status as st
from archive.index import retrieves
from archive.index.retrieves import COMPLETED, FAILED, WARNING, Acknowledgements, ItemToSend
from archive.index.slots import NoSlotFree, destination_slot
from archive.pixels.decode_pool import DecodeRefused, shared_pool
from archive.routing.deidentify import NotReleasable, deidentify, destination_key
from archive.services.outbound import NoCommonSyntax, dataset_to_send
from contract import names
from contract.payloads import RetrieveEnd, RetrieveOutcome, RetrieveRequest
from dimse.direct_store import DirectStoreUnavailable, StoreOrigin, send_file
from dimse.store_scu import (
    DestinationUnavailable,
    accepted_syntaxes,
    open_store_association,
    outbound_tls,
    release,
    store,
)

log = logging.getLogger("dicomflow.retrieve")
BATCH = 50
HEARTBEAT_EVERY = 1.0  # seconds; the workflow's heartbeat timeout is 10 s
_WARNINGS = {0xB000, 0xB006, 0xB007}


def _outcome(status: int) -> str:
    if status == st.SUCCESS:
        return COMPLETED
    return WARNING if status in _WARNINGS else FAILED


def _heartbeat_from_thread() -> Callable[[int], None]:
    """activity.heartbeat, callable from a worker thread: an async activity's heartbeat must run on
    its event loop, in its context (temporalio schedules a task there). A local activity (a small
    move) has nothing to heartbeat to: its workflow task is kept alive instead."""
    if activity.info().is_local:
        return lambda position: None
    loop, context = asyncio.get_running_loop(), contextvars.copy_context()
    last = [0.0]

    def beat(position: int) -> None:
        now = time.monotonic()
        if now - last[0] >= HEARTBEAT_EVERY:  # each one is a task on the loop: not one per instance
            last[0] = now
            loop.call_soon_threadsafe(activity.heartbeat, position, context=context)

    return beat


def _tls(settings: Settings, destination: str, peer: AEEntry) -> ssl.SSLContext | None:
    """DICOM TLS to the destination when its AE table entry says so; a configuration that cannot
    give it is not retried (it will not change by itself)."""
    try:
        return outbound_tls(settings.tls, destination, peer)
    except DestinationUnavailable as err:
        raise ApplicationError(str(err), non_retryable=True) from None


class RetrieveActivities:
    def __init__(self, ctx: ActivityContext) -> None:
        self.ctx = ctx

    def all(self) -> list:
        return [self.send, self.finish]

    @activity.defn(name=names.RETRIEVE_SEND)
    async def send(self, request: RetrieveRequest) -> int:
        """Send every instance still owed; how many this attempt sent. Raises (to be retried) when the
        destination cannot be reached or drops the association, or (a forward) has no slot free."""
        if not request.slots:
            return await self._send(request)
        try:
            async with destination_slot(self.ctx.settings.effective_postgres_dsn(), request.destination_ae, request.slots):
                return await self._send(request)
        except NoSlotFree as err:
            raise ApplicationError(str(err)) from None

    async def _send(self, request: RetrieveRequest) -> int:
        pool, settings = self.ctx.pool, self.ctx.settings
        peer = await self._checked_destination(request)
        kinds = await retrieves.pending_kinds(pool, request.retrieve_id)
        opened = await asyncio.gather(
            asyncio.to_thread(
                open_store_association,
                settings.dimse.ae_title,
                request.destination_ae,
                peer,
                kinds,
                tls=_tls(settings, request.destination_ae, peer),
            ),
            asyncio.to_thread(Acknowledgements.borrow, self.ctx.acknowledgements),
            return_exceptions=True,
        )
        assoc, acks = opened
        failure = next((o for o in opened if isinstance(o, BaseException)), None)
        if failure is not None:
            await self._close(assoc, acks)
            if isinstance(failure, DestinationUnavailable):
                raise ApplicationError(str(failure)) from None
            raise failure
        assert isinstance(assoc, Association) and isinstance(acks, Acknowledgements)
        try:
            return await self._send_owed(request, assoc, acks)
        finally:
            await self._close(assoc, acks)

    async def _checked_destination(self, request: RetrieveRequest) -> AEEntry:
        """The tenant and destination again, from what the SCP recorded, not from the request: a
        workflow started by anyone who reached Temporal must not send one tenant's objects elsewhere."""
        recorded = await retrieves.recorded_as(self.ctx.pool, request.retrieve_id)
        if recorded != (request.tenant, request.destination_ae):
            raise ApplicationError(
                f"retrieve {request.retrieve_id} was not recorded for tenant {request.tenant!r} and destination "
                f"{request.destination_ae!r}; nothing is sent",
                non_retryable=True,
            )
        peer = self.ctx.settings.dimse.ae_table.get(request.destination_ae)
        if peer is None or not peer.reachable:
            raise ApplicationError(
                f"move destination {request.destination_ae!r} has no address in the AE table", non_retryable=True
            )
        if peer.tenant not in (None, request.tenant):
            raise ApplicationError(
                f"move destination {request.destination_ae!r} serves another tenant than {request.tenant!r}", non_retryable=True
            )
        return peer

    @staticmethod
    async def _close(assoc: Association | BaseException, acks: Acknowledgements | BaseException) -> None:
        if isinstance(acks, Acknowledgements):
            await asyncio.to_thread(acks.close)
        if isinstance(assoc, Association):
            await asyncio.to_thread(release, assoc)

    async def _send_owed(self, request: RetrieveRequest, assoc: Association, acks: Acknowledgements) -> int:
        pool, sent = self.ctx.pool, 0
        while True:
            items = await retrieves.pending(pool, request.retrieve_id, BATCH)
            if not items:
                return sent  # all sent, or cancelled by the requester
            # one hop off the event loop per batch: read, convert if needed, send, wait for the answer, record it
            sent = await self._in_thread(self._send_batch, request, assoc, items, acks, sent, _heartbeat_from_thread())

    @staticmethod
    async def _in_thread(send: Callable[..., int], *args: object) -> int:
        """`send(*args, stop)` on a thread. A cancelled activity (its heartbeat timed out, the workflow
        was cancelled) stops the thread after the instance it is sending, and waits for that, so the
        association and the acknowledgement connection are closed only once nothing uses them."""
        stop = threading.Event()
        batch = asyncio.ensure_future(asyncio.to_thread(send, *args, stop))
        try:
            return await asyncio.shield(batch)
        except asyncio.CancelledError:
            stop.set()
            await asyncio.wait([batch])
            raise

    def _send_batch(
        self,
        request: RetrieveRequest,
        assoc: Association,
        items: list[ItemToSend],
        acks: Acknowledgements,
        sent: int,
        beat: Callable[[int], None],
        stop: threading.Event,
    ) -> int:
        """How many this attempt has sent after `items`; each answer is recorded before the next goes."""
        for item in items:
            if stop.is_set():
                break
            status = self._send_one(request, assoc, item, (sent + 1) % 65536 or 1)
            if status is None:
                raise ApplicationError(f"{request.destination_ae} gave no answer for an instance; the association is lost")
            acks.record(request.retrieve_id, item.position, _outcome(status), status)
            beat(item.position)  # a slow destination must not let the heartbeat time out mid-batch
            sent += 1
        return sent

    def _send_one(self, request: RetrieveRequest, assoc: Association, item: ItemToSend, message_id: int) -> int | None:
        if item.sop_class_uid is None or item.blob_key is None or item.transfer_syntax is None:
            return st.NO_SUCH_OBJECT_INSTANCE  # deleted since the retrieve was accepted
        return self._send_blocking(request, assoc, item, message_id)

    def _send_blocking(self, request: RetrieveRequest, assoc: Association, item: ItemToSend, message_id: int) -> int | None:
        assert item.sop_class_uid is not None and item.blob_key is not None and item.transfer_syntax is not None
        accepted = accepted_syntaxes(assoc, item.sop_class_uid)
        try:
            with self.ctx.blobs.local_copy(item.blob_key) as path:
                if request.deidentify:
                    return self._send_deidentified(request, assoc, path, item, accepted, message_id)
                if item.transfer_syntax in accepted:
                    return self._send_file(request, assoc, path, message_id)
                outgoing = dataset_to_send(
                    path,
                    item.transfer_syntax,
                    accepted,
                    shared_pool(self.ctx.settings.decode.pool_limits),
                    self.ctx.blobs.spool_dir,
                )
                return store(assoc, outgoing, message_id, request.move_originator_ae, request.move_originator_message_id)
        except NoCommonSyntax as err:
            log.warning("retrieve %s: %s not sent: %s", request.retrieve_id, item.sop_uid, err)
            return st.SOP_CLASS_NOT_SUPPORTED
        except DecodeRefused as err:
            if not err.deterministic:  # busy or slow now: this attempt ends, the next resumes here
                raise ApplicationError(f"decompressing {item.sop_uid} for {request.destination_ae}: {err}") from None
            log.warning("retrieve %s: %s not sent: cannot be decompressed: %s", request.retrieve_id, item.sop_uid, err)
            return st.PROCESSING_FAILURE

    def _send_deidentified(
        self, request: RetrieveRequest, assoc: Association, path: Path, item: ItemToSend, accepted: set[str], message_id: int
    ) -> int | None:
        """A copy with the profile applied (never the stored bytes); an object it cannot make safe is not sent."""
        assert item.transfer_syntax is not None
        secret = self.ctx.settings.effective_deidentify_key()
        if not secret:
            raise ApplicationError("de-identified forwards need deidentify_key (made by `dicomflow up`)", non_retryable=True)
        outgoing: Dataset
        if item.transfer_syntax in accepted:
            outgoing = dcmread(path)
        else:
            outgoing = dataset_to_send(
                path, item.transfer_syntax, accepted, shared_pool(self.ctx.settings.decode.pool_limits), self.ctx.blobs.spool_dir
            )
        try:
            deidentify(outgoing, request.deidentify, destination_key(secret, request.destination_ae))
        except NotReleasable as err:
            log.warning("forward %s: %s not sent: %s", request.retrieve_id, item.sop_uid, err)
            return st.PROCESSING_FAILURE
        return store(assoc, outgoing, message_id, "", 0)

    def _send_file(self, request: RetrieveRequest, assoc: Association, path: Path, message_id: int) -> int | None:
        """As stored: straight to the socket where the association allows, else through pynetdicom."""
        # PS3.7 9.1.1.1: the originator is the AE that asked for the move, not this archive
        origin = StoreOrigin(request.move_originator_ae, request.move_originator_message_id)
        try:
            return send_file(assoc, path, message_id, origin)
        except DirectStoreUnavailable:
            return store(assoc, path, message_id, origin.ae_title, request.move_originator_message_id)

    @activity.defn(name=names.RETRIEVE_FINISH)
    async def finish(self, end: RetrieveEnd) -> RetrieveOutcome:
        pool, retrieve_id = self.ctx.pool, end.request.retrieve_id
        if end.gave_up:
            log.warning("retrieve %s: giving up on what is still owed: %s", retrieve_id, end.gave_up)
            await retrieves.fail_pending(pool, retrieve_id, st.OUT_OF_RESOURCES_SUBOPERATIONS)
        await retrieves.finish(pool, retrieve_id)
        progress = await retrieves.progress(pool, retrieve_id)
        return RetrieveOutcome(progress.state, progress.completed, progress.warning, progress.failed)
