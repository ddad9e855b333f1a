"""The StudyWorkflow's steps. Each is idempotent: it works on the instances in the state it
consumes, so a retry after a crash picks up exactly what is left."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from typing import TypeVar

from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.context import ActivityContext
from archive.blobstore.layout import series_metadata_key
from archive.dicom.dicom_json import DICOMWEB_ROOT, file_json, gzip_json_texts, instance_base, json_text
from archive.index import commitments, lifecycle
from archive.index.instance_state import InstanceState
from archive.index.lifecycle import InstanceFile
from archive.pixels.decode_pool import DecodePool, DecodeRefused, shared_pool
from archive.pixels.transcode import TARGET_SYNTAX, needs_uncompressed_copy, uncompressed_copy
from archive.services.verify import verify_blob
from contract import names
from contract.payloads import StepResult, StudyRef

log = logging.getLogger("dicomflow.activities")
T = TypeVar("T")
HEARTBEAT_SECONDS = 10.0  # the workflow's heartbeat timeout is 30 s; one large object may take longer
# a decode that times out this many attempts running is taken as the object's doing, not the machine's
TIMEOUT_ATTEMPTS = 3
VERIFIED_PER_COMMIT = 200  # verify marks the instances it checked in batches: one commit each, not one per instance


class StudyActivities:
    def __init__(self, ctx: ActivityContext) -> None:
        self.ctx = ctx

    def all(self) -> list:
        return [self.store, self.verify, self.commit, self.transcode, self.index, self.generate_json]

    @activity.defn(name=names.STORE)
    async def store(self, ref: StudyRef) -> StepResult:
        """Take the instances received (fsync'd and indexed at receipt) into this pass."""
        claimed = await lifecycle.claim_received(self.ctx.pool, ref.tenant, ref.study_uid)
        return StepResult(names.STORE, processed=claimed)

    @activity.defn(name=names.VERIFY)
    async def verify(self, ref: StudyRef) -> StepResult:
        pool, blobs = self.ctx.pool, self.ctx.blobs
        result = StepResult(names.VERIFY)
        verified: list[str] = []
        for item in await lifecycle.instances_in_state(pool, ref.tenant, ref.study_uid, InstanceState.STORED):
            _beat(item.sop_uid)
            problem = await self.ctx.in_background(verify_blob, blobs, item.blob_key, item.size, item.sha256)
            if problem is None:
                verified.append(item.sop_uid)
                if len(verified) >= VERIFIED_PER_COMMIT:  # a retry re-checks only what was not marked yet
                    result.processed += await lifecycle.mark_verified(pool, ref.tenant, verified)
                    verified.clear()
            else:
                # a corrupt object is a final answer, not a reason to retry forever
                await lifecycle.set_state(pool, ref.tenant, item.sop_uid, InstanceState.FAILED, problem)
                result.failed += 1
                result.failures.append(f"{item.sop_uid}: {problem}"[:300])
        result.processed += await lifecycle.mark_verified(pool, ref.tenant, verified)
        return result

    async def take_in(self, ref: StudyRef) -> list[StepResult]:
        """The store, verify and commit steps in one, for a whole pass: the instances received so far
        are read back and checked, and go to committed in one update per batch. Instances a pass of an
        earlier version left stored or verified go on through those steps, which find nothing otherwise."""
        pool, blobs = self.ctx.pool, self.ctx.blobs
        store, verify = StepResult(names.STORE), StepResult(names.VERIFY)
        committed, checked = 0, []
        for item in await lifecycle.instances_in_state(pool, ref.tenant, ref.study_uid, InstanceState.RECEIVED):
            _beat(item.sop_uid)
            store.processed += 1
            problem = await self.ctx.in_background(verify_blob, blobs, item.blob_key, item.size, item.sha256)
            if problem is None:
                checked.append((item.sop_uid, item.blob_key))
                if len(checked) >= VERIFIED_PER_COMMIT:  # a retry re-checks only what was not committed yet
                    committed += await lifecycle.commit_checked(pool, ref.tenant, checked)
                    checked.clear()
                continue
            await lifecycle.set_state(pool, ref.tenant, item.sop_uid, InstanceState.FAILED, problem)
            verify.failed += 1
            verify.failures.append(f"{item.sop_uid}: {problem}"[:300])
        committed += await lifecycle.commit_checked(pool, ref.tenant, checked)
        verify.processed = committed
        earlier = await self.verify(ref)  # what an earlier pass claimed (stored): checked as it was
        verify.processed, verify.failed = verify.processed + earlier.processed, verify.failed + earlier.failed
        verify.failures.extend(earlier.failures)
        commit = await self.commit(ref)  # what an earlier pass verified; and waiting commitments are woken
        commit.processed += committed
        return [store, verify, commit]

    async def failed_in_study(self, ref: StudyRef) -> int:
        return await lifecycle.failed_in_study(self.ctx.pool, ref.tenant, ref.study_uid)

    @activity.defn(name=names.COMMIT)
    async def commit(self, ref: StudyRef) -> StepResult:
        committed = await lifecycle.commit_verified(self.ctx.pool, ref.tenant, ref.study_uid)
        await self._wake_commitments(ref.tenant)
        return StepResult(names.COMMIT, processed=committed)

    async def _wake_commitments(self, tenant: str) -> None:
        client = activity.client()
        for transaction_uid in await commitments.pending_transactions(self.ctx.pool, tenant):
            try:
                await client.get_workflow_handle(names.commitment_workflow_id(tenant, transaction_uid)).signal(
                    names.COMMITMENT_WAKE
                )
            except Exception:  # noqa: BLE001 - the commitment workflow also polls
                log.info("could not wake %s", transaction_uid)

    @activity.defn(name=names.TRANSCODE)
    async def transcode(self, ref: StudyRef) -> StepResult:
        """Decoding runs in this process's decode pool (bounded memory and time per object). An
        object the pool refuses for good stays as received, with the reason on its row, and the
        step goes on: failing the step would fail the study's workflow and leave every other
        instance without index and metadata. Storage errors, and refusals that may pass (a busy
        pool, a timeout on a loaded machine), are raised for Temporal to retry the step."""
        if self.ctx.settings.storage.transcode_policy == "keep":
            return StepResult(names.TRANSCODE, detail="policy keep: objects kept as received")
        result = StepResult(names.TRANSCODE, detail=f"policy {self.ctx.settings.storage.transcode_policy}")
        decoder = shared_pool(self.ctx.settings.decode.pool_limits)
        passing: list[str] = []
        for item in await lifecycle.instances_in_state(self.ctx.pool, ref.tenant, ref.study_uid, InstanceState.COMMITTED):
            if not needs_uncompressed_copy(item.transfer_syntax):
                continue
            _beat(item.sop_uid)
            key = item.blob_key.removesuffix(".dcm") + ".explicit-le.dcm"
            try:
                await _heartbeating(self.ctx.in_background(self._write_uncompressed, decoder, item.blob_key, key), item.sop_uid)
            except DecodeRefused as err:
                if not _final(err):
                    passing.append(f"{item.sop_uid}: {err.reason}: {err}")
                    continue
                await self._record_refusal(ref, item, err, result)
                continue
            await lifecycle.record_transcoded(self.ctx.pool, ref.tenant, item.sop_uid, key, TARGET_SYNTAX)
            result.processed += 1
        if passing:
            raise ApplicationError(
                f"{len(passing)} object(s) not decoded this attempt: " + "; ".join(passing)[:1000], type="DecodeRefused"
            )
        return result

    def _write_uncompressed(self, decoder: DecodePool, source_key: str, target_key: str) -> None:
        blobs = self.ctx.blobs
        spool = blobs.new_spool_file()
        try:
            with blobs.local_copy(source_key) as path:
                uncompressed_copy(decoder, path, spool)
            blobs.commit(blobs.stage_file(spool), target_key)
        finally:
            spool.unlink(missing_ok=True)

    async def _record_refusal(self, ref: StudyRef, item: InstanceFile, err: DecodeRefused, result: StepResult) -> None:
        """On the instance's row (failure_reason) and in the step's result, which the Temporal UI
        shows. The state stays committed: the object is intact and served as received."""
        reason = f"transcode refused ({err.reason}): {err}"[:500]
        log.warning("%s/%s: %s", ref.tenant, item.sop_uid, reason)
        await lifecycle.set_state(self.ctx.pool, ref.tenant, item.sop_uid, InstanceState.COMMITTED, reason)
        result.failed += 1
        result.failures.append(f"{item.sop_uid}: {reason}"[:300])

    @activity.defn(name=names.INDEX)
    async def index(self, ref: StudyRef) -> StepResult:
        series, instances = await lifecycle.refresh_aggregates(self.ctx.pool, ref.tenant, ref.study_uid)
        return StepResult(names.INDEX, processed=instances, detail=f"{series} series, {instances} instances")

    @activity.defn(name=names.GENERATE_JSON)
    async def generate_json(self, ref: StudyRef) -> StepResult:
        result = StepResult(names.GENERATE_JSON)
        for series_uid, study_date in await lifecycle.series_for_metadata(self.ctx.pool, ref.tenant, ref.study_uid):
            _beat(series_uid)
            key = series_metadata_key(ref.tenant, study_date, ref.study_uid, series_uid)
            snapshot = await lifecycle.series_snapshot(self.ctx.pool, ref.tenant, series_uid)
            items = snapshot.committed
            try:
                skipped = await self.ctx.in_background(self._write_series_json, ref, series_uid, items, key)
            except OSError as err:  # storage trouble: recorded, then retried by Temporal
                await lifecycle.record_metadata(self.ctx.pool, ref.tenant, series_uid, None, f"{type(err).__name__}: {err}"[:500])
                raise
            error = "; ".join(skipped)[:500] if skipped else None
            await lifecycle.record_metadata(self.ctx.pool, ref.tenant, series_uid, key, error, snapshot.document_version)
            result.processed += len(items) - len(skipped)
            result.failed += len(skipped)
            result.failures.extend(skipped)
        await lifecycle.set_study_state(self.ctx.pool, ref.tenant, ref.study_uid, "ready")
        return result

    def _write_series_json(self, ref: StudyRef, series_uid: str, items: list, key: str) -> list[str]:
        """Write the series document; return the instances left out (unreadable headers) with why."""
        texts, skipped = [], []
        for item in items:
            text = self.ctx.json_fragments.get(item.blob_key)
            if text is None:
                base = instance_base(DICOMWEB_ROOT, ref.study_uid, series_uid, item.sop_uid)
                with self.ctx.blobs.local_copy(item.blob_key) as path:
                    try:
                        text = json_text(file_json(path, base))
                    except (ValueError, TypeError, KeyError, AttributeError) as err:  # a header pydicom cannot render
                        skipped.append(f"{item.sop_uid}: {type(err).__name__}: {err}"[:200])
                        continue
                self.ctx.json_fragments.put(item.blob_key, text)
            texts.append(text)
        self.ctx.blobs.put_bytes(key, gzip_json_texts(texts))
        return skipped


def _final(err: DecodeRefused) -> bool:
    """Whether a retry would only be refused again."""
    return err.deterministic or (err.reason == "timeout" and activity.info().attempt >= TIMEOUT_ATTEMPTS)


async def _heartbeating(work: Awaitable[T], detail: str) -> T:
    """Await work, heartbeating meanwhile: one large object may take longer than the heartbeat timeout."""
    task = asyncio.ensure_future(work)
    while True:
        done, _ = await asyncio.wait({task}, timeout=HEARTBEAT_SECONDS)
        if done:
            return task.result()
        _beat(detail)


def _beat(detail: str) -> None:
    """Heartbeat the pass; a small pass runs as a local activity, which has no heartbeat (the workflow
    task it runs in is kept alive by the SDK instead)."""
    if not activity.info().is_local:
        activity.heartbeat(detail)
