"""The StudyWorkflow's steps. Each is idempotent: it works on the instances in the state it
consumes, so a retry after a crash picks up exactly what is left."""

from __future__ import annotations

import asyncio
import logging

from temporalio import activity

from activities import names
from activities.context import ActivityContext
from activities.types import StepResult, StudyRef
from archive.dicom_json import DICOMWEB_ROOT, file_json, gzip_json, instance_base
from archive.index import commitments, lifecycle
from archive.layout import series_metadata_key
from archive.transcode import TARGET_SYNTAX, needs_uncompressed_copy, uncompressed_bytes
from archive.verify import verify_blob

log = logging.getLogger("dicomflow.activities")


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
        for item in await lifecycle.instances_in_state(pool, ref.tenant, ref.study_uid, "stored"):
            activity.heartbeat(item.sop_uid)
            problem = await asyncio.to_thread(verify_blob, blobs, item.blob_key, item.size, item.sha256)
            if problem is None:
                await lifecycle.set_state(pool, ref.tenant, item.sop_uid, "verified")
                result.processed += 1
            else:
                # a corrupt object is a final answer, not a reason to retry forever
                await lifecycle.set_state(pool, ref.tenant, item.sop_uid, "failed", problem)
                result.failed += 1
                result.failures.append(f"{item.sop_uid}: {problem}"[:300])
        return result

    @activity.defn(name=names.COMMIT)
    async def commit(self, ref: StudyRef) -> StepResult:
        committed = await lifecycle.commit_verified(self.ctx.pool, ref.tenant, ref.study_uid)
        await self._wake_commitments(ref.tenant)
        return StepResult(names.COMMIT, processed=committed)

    async def _wake_commitments(self, tenant: str) -> None:
        client = activity.client()
        for transaction_uid in await commitments.pending_transactions(self.ctx.pool, tenant):
            try:
                await client.get_workflow_handle(names.commitment_workflow_id(tenant, transaction_uid)).signal(names.COMMITMENT_WAKE)
            except Exception:  # noqa: BLE001 - the commitment workflow also polls
                log.info("could not wake %s", transaction_uid)

    @activity.defn(name=names.TRANSCODE)
    async def transcode(self, ref: StudyRef) -> StepResult:
        if self.ctx.settings.transcode_policy == "keep":
            return StepResult(names.TRANSCODE, detail="policy keep: objects kept as received")
        result = StepResult(names.TRANSCODE, detail=f"policy {self.ctx.settings.transcode_policy}")
        for item in await lifecycle.instances_in_state(self.ctx.pool, ref.tenant, ref.study_uid, "committed"):
            if not needs_uncompressed_copy(item.transfer_syntax):
                continue
            activity.heartbeat(item.sop_uid)
            key = item.blob_key.removesuffix(".dcm") + ".explicit-le.dcm"
            try:
                await asyncio.to_thread(self._write_uncompressed, item.blob_key, key)
            except Exception as err:  # noqa: BLE001 - an undecodable object stays as received
                result.failed += 1
                result.failures.append(f"{item.sop_uid}: cannot decode {item.transfer_syntax}: {err}"[:300])
                continue
            await lifecycle.record_transcoded(self.ctx.pool, ref.tenant, item.sop_uid, key, TARGET_SYNTAX)
            result.processed += 1
        return result

    def _write_uncompressed(self, source_key: str, target_key: str) -> None:
        with self.ctx.blobs.local_copy(source_key) as path:
            data = uncompressed_bytes(path)
        self.ctx.blobs.put_bytes(target_key, data)

    @activity.defn(name=names.INDEX)
    async def index(self, ref: StudyRef) -> StepResult:
        series, instances = await lifecycle.refresh_aggregates(self.ctx.pool, ref.tenant, ref.study_uid)
        return StepResult(names.INDEX, processed=instances, detail=f"{series} series, {instances} instances")

    @activity.defn(name=names.GENERATE_JSON)
    async def generate_json(self, ref: StudyRef) -> StepResult:
        result = StepResult(names.GENERATE_JSON)
        for series_uid, study_date in await lifecycle.series_for_metadata(self.ctx.pool, ref.tenant, ref.study_uid):
            activity.heartbeat(series_uid)
            key = series_metadata_key(ref.tenant, study_date, ref.study_uid, series_uid)
            items = await lifecycle.committed_in_series(self.ctx.pool, ref.tenant, series_uid)
            try:
                skipped = await asyncio.to_thread(self._write_series_json, ref, series_uid, items, key)
            except OSError as err:  # storage trouble: recorded, then retried by Temporal
                await lifecycle.record_metadata(self.ctx.pool, ref.tenant, series_uid, None, f"{type(err).__name__}: {err}"[:500])
                raise
            error = "; ".join(skipped)[:500] if skipped else None
            await lifecycle.record_metadata(self.ctx.pool, ref.tenant, series_uid, key, error)
            result.processed += len(items) - len(skipped)
            result.failed += len(skipped)
            result.failures.extend(skipped)
        await lifecycle.set_study_state(self.ctx.pool, ref.tenant, ref.study_uid, "ready")
        return result

    def _write_series_json(self, ref: StudyRef, series_uid: str, items: list, key: str) -> list[str]:
        """Write the series document; return the instances left out (unreadable headers) with why."""
        blobs = self.ctx.blobs
        documents, skipped = [], []
        for item in items:
            base = instance_base(DICOMWEB_ROOT, ref.study_uid, series_uid, item.sop_uid)
            with blobs.local_copy(item.blob_key) as path:
                try:
                    documents.append(file_json(path, base))
                except (ValueError, TypeError, KeyError, AttributeError) as err:  # a header pydicom cannot render
                    skipped.append(f"{item.sop_uid}: {type(err).__name__}: {err}"[:200])
        blobs.put_bytes(key, gzip_json(documents))
        return skipped
