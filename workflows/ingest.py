"""The receiving process's side of ingest, shared by the DIMSE SCP and STOW-RS:
receipt (archive) + buffered workflow signals + the outbox mark once Temporal has them."""

from __future__ import annotations

import asyncio
import logging

from temporalio.client import Client

from archive.blobstore import BlobStore, StagedBlob, open_blob_store
from archive.index.instances import mark_signalled
from archive.index.pool import open_index_pool
from archive.receipt import Receipt, Receiver
from archive.settings import Settings
from workflows.client import StudySignaller

log = logging.getLogger("dicomflow.ingest")


class Ingest:
    def __init__(self, settings: Settings, blobs: BlobStore, pool, receiver: Receiver) -> None:
        self.settings = settings
        self.blobs = blobs
        self.pool = pool
        self.receiver = receiver
        self.signaller: StudySignaller | None = None
        self._periodic: asyncio.Task | None = None
        self._connect_lock = asyncio.Lock()

    @classmethod
    async def open(cls, settings: Settings, pool_size: int = 10) -> "Ingest":
        pool = await open_index_pool(settings.effective_postgres_dsn(), max_size=pool_size)
        blobs = await asyncio.to_thread(open_blob_store, settings)
        ingest = cls(settings, blobs, pool, Receiver(blobs, pool, settings.duplicate_policy))
        await ingest._ensure_signaller()
        ingest._periodic = asyncio.create_task(ingest._flush_every_second())
        return ingest

    async def _ensure_signaller(self) -> StudySignaller | None:
        """Temporal may be down: receipt goes on, the outbox keeps the rows, we connect later."""
        async with self._connect_lock:
            if self.signaller is None:
                try:
                    client = await Client.connect(self.settings.effective_temporal_address(),
                                                  namespace=self.settings.temporal_namespace)
                except Exception as err:  # noqa: BLE001
                    log.warning("Temporal unreachable (%s); instances wait in the outbox", err)
                    return None
                self.signaller = StudySignaller(client, self.settings.temporal_task_queue,
                                                self.settings.stable_seconds, self._delivered)
            return self.signaller

    async def temporal_client(self) -> Client:
        signaller = await self._ensure_signaller()
        if signaller is None:
            raise ConnectionError(f"Temporal at {self.settings.effective_temporal_address()} is unreachable")
        return signaller.client

    async def _delivered(self, tenant: str, sop_uids: list[str]) -> None:
        await mark_signalled(self.pool, tenant, sop_uids)

    async def receive(self, tenant: str, staged: StagedBlob, source: str, **expect: str | None) -> Receipt:
        receipt = await self.receiver.receive(tenant, staged, source, **expect)
        if receipt.needs_workflow and self.signaller is not None:
            a = receipt.attributes
            self.signaller.add(receipt.tenant, a.study_uid, a.sop_uid, a.modality)
        return receipt

    async def flush(self, studies: set[tuple[str, str]] | None = None) -> None:
        signaller = await self._ensure_signaller()
        if signaller is not None:
            await signaller.flush(studies)

    async def _flush_every_second(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            try:
                await self.flush()
            except Exception:  # noqa: BLE001 - keep the loop alive; the reconciler is the backstop
                log.exception("periodic flush failed")

    async def close(self) -> None:
        if self._periodic:
            self._periodic.cancel()
        await self.flush()
        await self.pool.close()
