"""Ingest for one receiving process: receipt (archive) + buffered workflow signals + the outbox
mark once Temporal has them. Temporal may be down: receipt goes on and the rows wait."""

from __future__ import annotations

import asyncio
import logging

from psycopg_pool import AsyncConnectionPool
from temporalio.client import Client

from archive.blobstore import BlobStore, StagedBlob
from archive.config.settings import Settings
from archive.dicom.rejection_note import RETENTION_EXPIRED
from archive.index.instances import mark_signalled
from archive.pixels.decode_pool import shared_pool
from archive.resources import Resources
from archive.routing.registry import rules_in_force
from archive.routing.rules import study_matches
from archive.services.quota import QuotaGate
from archive.services.receipt import Prepared, Receipt, Receiver
from contract.payloads import ForwardRequest
from contract.starts import expire_rejections_now, tell_forward
from receiving.rejection_audit import rejection_event
from receiving.signaller import StudySignaller

log = logging.getLogger("dicomflow.ingest")
FLUSH_TICK_SECONDS = 0.5  # how often quiet studies are looked for (receiving/signaller.py)


class Ingest:
    def __init__(self, resources: Resources) -> None:
        self.resources = resources
        self.settings: Settings = resources.settings
        # a re-sent object's pixels are compared in this process's decode pool, the one WADO uses
        self.receiver = Receiver(
            resources.blobs,
            resources.pool,
            self.settings.ingest.duplicate_policy,
            self.settings.decode.limits,
            self.settings.ingest.uid_policy,
            shared_pool(self.settings.decode.pool_limits),
            QuotaGate(resources.pool, self.settings.lifecycle.quota_bytes) if self.settings.lifecycle.quota_bytes else None,
        )
        self.signaller: StudySignaller | None = None
        self._periodic: asyncio.Task[None] | None = None
        self._connect_lock = asyncio.Lock()

    @property
    def blobs(self) -> BlobStore:
        return self.resources.blobs

    @property
    def pool(self) -> AsyncConnectionPool:
        return self.resources.pool

    @classmethod
    async def open(cls, resources: Resources) -> "Ingest":
        ingest = cls(resources)
        await ingest._ensure_signaller()
        ingest._periodic = asyncio.create_task(ingest._flush_due_loop())
        return ingest

    async def _ensure_signaller(self) -> StudySignaller | None:
        async with self._connect_lock:
            if self.signaller is None:
                try:
                    client = await Client.connect(
                        self.settings.effective_temporal_address(), namespace=self.settings.temporal.namespace
                    )
                except Exception as err:  # noqa: BLE001
                    log.warning("Temporal unreachable (%s); instances wait in the outbox", err)
                    return None
                self.signaller = StudySignaller(
                    client,
                    self.settings.temporal.task_queue,
                    self.settings.ingest.stable_seconds,
                    self._delivered,
                    self._forward_now,
                )
            return self.signaller

    async def _forward_now(self, studies: set[tuple[str, str]]) -> None:
        """Rules with when = "instance": their forward hears of the new instances now, not once the
        study is processed (the routing step tells it again then; a round finds nothing new)."""
        rules = [r for r in await rules_in_force(self.settings.routing, self.resources.pool) if r.when == "instance"]
        for rule in rules:
            for tenant, study_uid in studies:
                if self.signaller is None or not rule.applies_to(tenant):
                    continue
                if await study_matches(self.resources.pool, rule, tenant, study_uid):
                    to = rule.to
                    request = ForwardRequest(tenant, rule.name, study_uid, to.destination, rule.deidentify or "", to.kind)
                    await tell_forward(self.signaller.client, self.settings.temporal.task_queue, request)

    async def temporal_client(self) -> Client:
        signaller = await self._ensure_signaller()
        if signaller is None:
            raise ConnectionError(f"Temporal at {self.settings.effective_temporal_address()} is unreachable")
        return signaller.client

    async def _delivered(self, tenant: str, sop_uids: list[str]) -> None:
        await mark_signalled(self.resources.pool, tenant, sop_uids)

    async def receive(self, tenant: str, staged: StagedBlob, source: str, **expect: str | None) -> Receipt:
        return await self._after(self._signal(await self.receiver.receive(tenant, staged, source, **expect)), source)

    def prepare(self, tenant: str, staged: StagedBlob, **expect: str | None) -> Prepared | Receipt:
        """Parse and check on the caller's thread (a DIMSE association's own): the object ready for
        `commit`, or the refusal's Receipt (its staged bytes then discarded)."""
        return self.receiver.prepare(tenant, staged, **expect)

    async def commit(self, prepared: Prepared, source: str) -> Receipt:
        """Store what `prepare` accepted: bytes fsync'd, row committed, its study's workflow signalled."""
        return await self._after(self._signal(await self.receiver.store(prepared, source)), source)

    async def _after(self, receipt: Receipt, source: str) -> Receipt:
        """A rejection note that withdrew instances: in the audit trail, and a 113039 (Data Retention
        Policy Expired) has its instances deleted now rather than at the next scheduled expiry."""
        if receipt.rejection_code is None or receipt.attributes is None:
            return receipt
        self.resources.audit.record(rejection_event(receipt, source))
        if receipt.rejection_code == RETENTION_EXPIRED:
            try:
                await expire_rejections_now(await self.temporal_client())
            except Exception:  # noqa: BLE001 - the Schedule's next run deletes them
                log.warning("could not start the rejection expiry now; its next scheduled run will", exc_info=True)
        return receipt

    def _signal(self, receipt: Receipt) -> Receipt:
        if receipt.needs_workflow and self.signaller and receipt.attributes and receipt.tenant:
            a = receipt.attributes
            self.signaller.add(receipt.tenant, a.study_uid, a.sop_uid, a.modality)
        return receipt

    async def flush(self, studies: set[tuple[str, str]] | None = None, settled: bool = False) -> None:
        """Signal these studies' workflows now (all, when none are named); `settled` when the sender knows
        it has sent all it will, so the workflow need not wait for quiet."""
        signaller = await self._ensure_signaller()
        if signaller is not None:
            await signaller.flush(studies, settled)

    async def _flush_due_loop(self) -> None:
        while True:
            await asyncio.sleep(FLUSH_TICK_SECONDS)
            try:
                signaller = await self._ensure_signaller()
                if signaller is not None:
                    await signaller.flush_due()
            except Exception:  # noqa: BLE001 - keep the loop alive; the reconciler is the backstop
                log.exception("periodic flush failed")

    async def close(self) -> None:
        if self._periodic:
            self._periodic.cancel()
        await self.flush()
