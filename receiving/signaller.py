"""Buffer arrivals per study, signal-with-start its StudyWorkflow per batch.

Temporal's dev server takes ~150-300 signals/s, so one signal per instance would cap ingest near
145 instances/s. Receivers call `add` per stored instance and `flush` at the end of an association
or request; a background task flushes whatever is left every second.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from temporalio.client import Client

from contract import names
from contract.starts import signal_study

log = logging.getLogger("dicomflow.signal")

Delivered = Callable[[str, list[str]], Awaitable[None]]
Signalled = Callable[[str, str], Awaitable[None]]  # (tenant, study): after its workflow heard of new instances


@dataclass
class _Batch:
    modality: str | None = None
    sop_uids: list[str] = field(default_factory=list)


class StudySignaller:
    def __init__(
        self,
        client: Client,
        task_queue: str,
        stable_seconds: float,
        on_delivered: Delivered,
        on_signalled: Signalled | None = None,
    ) -> None:
        self.client = client
        self.task_queue = task_queue
        self.stable_seconds = stable_seconds
        self.on_delivered = on_delivered
        self.on_signalled = on_signalled
        self._pending: dict[tuple[str, str], _Batch] = {}
        self._lock = asyncio.Lock()

    def add(self, tenant: str, study_uid: str, sop_uid: str, modality: str | None) -> None:
        batch = self._pending.setdefault((tenant, study_uid), _Batch(modality))
        batch.sop_uids.append(sop_uid)

    async def flush(self, studies: set[tuple[str, str]] | None = None) -> None:
        async with self._lock:  # one sender per study at a time
            keys = [k for k in list(self._pending) if studies is None or k in studies]
            taken = {k: self._pending.pop(k) for k in keys}
            for (tenant, study_uid), batch in taken.items():
                try:
                    await signal_study(
                        self.client, self.task_queue, tenant, study_uid, len(batch.sop_uids), batch.modality, self.stable_seconds
                    )
                    await self.on_delivered(tenant, batch.sop_uids)
                except Exception:  # noqa: BLE001 - the rows stay unsignalled; the reconciler retries
                    log.warning(
                        "could not signal %s; the reconciler will", names.study_workflow_id(tenant, study_uid), exc_info=True
                    )
                    continue
                await self._signalled(tenant, study_uid)

    async def _signalled(self, tenant: str, study_uid: str) -> None:
        if self.on_signalled is None:
            return
        try:
            await self.on_signalled(tenant, study_uid)
        except Exception:  # noqa: BLE001 - the study's routing step tells the forwards again when it is processed
            log.warning("instance forwards of a study in %s not told now; the routing step will", tenant, exc_info=True)
