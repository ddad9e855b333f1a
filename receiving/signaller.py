"""Buffer arrivals per study; signal-with-start its StudyWorkflow once the study is quiet.

Temporal's dev server takes ~150-300 signals/s, so one signal per instance would cap ingest near
145 instances/s. Receivers call `add` per stored instance; `flush_due`, called a few times a second,
signals each study that has been quiet for `stable_seconds` as *settled*: the workflow then
processes it at once instead of waiting on a timer of its own, which saves its history a timer and
a workflow task (a one-instance study's whole life is one workflow task). A study that keeps
arriving is signalled unsettled after HOLD_SECONDS, so its workflow exists and the reconciler,
which re-signals rows left unsignalled for 10 s, never races this buffer.

Instance-level forwards (`on_signalled`) hear of new instances at every tick, not only once the
study is quiet.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from temporalio.client import Client

from contract import names
from contract.starts import signal_study

log = logging.getLogger("dicomflow.signal")

Delivered = Callable[[str, list[str]], Awaitable[None]]
Signalled = Callable[[set[tuple[str, str]]], Awaitable[None]]  # {(tenant, study)}: new instances were stored
HOLD_SECONDS = 5.0  # a study still arriving is signalled after this; below the reconciler's 10 s


@dataclass
class _Batch:
    modality: str | None = None
    sop_uids: list[str] = field(default_factory=list)
    first: float = field(default_factory=time.monotonic)
    last: float = field(default_factory=time.monotonic)


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
        self._unforwarded: set[tuple[str, str]] = set()
        self._lock = asyncio.Lock()

    def add(self, tenant: str, study_uid: str, sop_uid: str, modality: str | None) -> None:
        batch = self._pending.setdefault((tenant, study_uid), _Batch(modality))
        batch.sop_uids.append(sop_uid)
        batch.last = time.monotonic()
        self._unforwarded.add((tenant, study_uid))

    async def flush_due(self) -> None:
        """Signal the studies quiet for stable_seconds (settled) and those held too long (not settled)."""
        now = time.monotonic()
        settled = {k for k, b in self._pending.items() if now - b.last >= self.stable_seconds}
        held = {k for k, b in self._pending.items() if now - b.first >= HOLD_SECONDS} - settled
        await self._signal(settled, settled=True)
        await self._signal(held, settled=False)
        await self._tell_forwards()

    async def flush(self, studies: set[tuple[str, str]] | None = None, settled: bool = False) -> None:
        """Signal now: every study (at close), or these (a sender that knows it is done says settled)."""
        await self._signal(set(self._pending) if studies is None else studies, settled)
        await self._tell_forwards()

    async def _signal(self, studies: set[tuple[str, str]], settled: bool) -> None:
        if not studies:
            return
        async with self._lock:  # one sender per study at a time
            taken = {k: self._pending.pop(k) for k in studies if k in self._pending}
            for (tenant, study_uid), batch in taken.items():
                try:
                    await signal_study(
                        self.client,
                        self.task_queue,
                        tenant,
                        study_uid,
                        len(batch.sop_uids),
                        batch.modality,
                        self.stable_seconds,
                        settled=settled,
                    )
                    await self.on_delivered(tenant, batch.sop_uids)
                except Exception:  # noqa: BLE001 - the rows stay unsignalled; the reconciler retries
                    log.warning(
                        "could not signal %s; the reconciler will", names.study_workflow_id(tenant, study_uid), exc_info=True
                    )

    async def _tell_forwards(self) -> None:
        """Once per tick for every study with new instances, so the rules are read once, not per study."""
        studies, self._unforwarded = self._unforwarded, set()
        if self.on_signalled is None or not studies:
            return
        try:
            await self.on_signalled(studies)
        except Exception:  # noqa: BLE001 - the study's routing step tells the forwards again when it is processed
            log.warning("instance forwards of %d studies not told now; the routing step will", len(studies), exc_info=True)
