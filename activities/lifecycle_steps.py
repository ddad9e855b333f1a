"""The steps of the lifecycle workflows (workflows/lifecycle.py): the plan (which rule is due for
which study now) and one rule applied to one study: a lossless compression (each object encoded,
decoded again and compared bit for bit in the decode pool, written under a new key, then the study
switched in one transaction and the old objects removed), a move to the cold store (each object
copied, the copy checked against the index's checksum, then the hot copy removed), or a retention (the study's instances
rejected as 113039 and deleted at once; a study on hold is left alone)."""

from __future__ import annotations

import asyncio
from datetime import datetime

from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.context import ActivityContext
from activities.rejected_deletion import delete_withdrawn
from archive.blobstore.layout import instance_key, new_write_id
from archive.blobstore.tiered import TieredBlobStore, move_to_cold
from archive.index.lifecycle_plan import due_studies, mark_done, native_objects
from archive.index.rejections import reject_for_retention
from archive.index.tiers import HotObject, hot_objects, mark_cold
from archive.index.updates import StoredObject
from archive.index.versions import NewVersion, switch_versions
from archive.lifecycle.compress import NotCompressible, write_compressed
from archive.lifecycle.rules import LifecycleRule
from archive.pixels.decode_pool import DecodeRefused, shared_pool
from archive.services.removals import remove_queued
from contract import names
from contract.payloads import LifecycleResult, LifecycleRun, LifecycleStudy, LifecycleTask
from contract.starts import signal_study

COMPRESSIONS_AT_ONCE = 2
TIER_MOVES_AT_ONCE = 2
TIER_MARK_EVERY = 100  # objects moved between index updates: what a crash makes a re-run check again
MAX_STUDIES_PER_RUN = 500  # the next run takes the rest


class LifecycleActivities:
    def __init__(self, ctx: ActivityContext) -> None:
        self.ctx = ctx

    def all(self) -> list:
        return [self.plan, self.apply]

    @activity.defn(name=names.LIFECYCLE_PLAN)
    async def plan(self, run: LifecycleRun) -> list[LifecycleStudy]:
        as_of = datetime.fromisoformat(run.as_of)
        studies: dict[tuple[str, str], LifecycleStudy] = {}
        for rule in self.ctx.settings.lifecycle.rules:
            for tenant, study_uid in await due_studies(self.ctx.pool, rule, as_of, MAX_STUDIES_PER_RUN):
                planned = studies.setdefault((tenant, study_uid), LifecycleStudy(tenant, study_uid))
                planned.tasks.append(LifecycleTask(rule.name, rule.action))
        return list(studies.values())[:MAX_STUDIES_PER_RUN]

    @activity.defn(name=names.LIFECYCLE_APPLY)
    async def apply(self, study: LifecycleStudy, task: LifecycleTask) -> LifecycleResult:
        rule = next((r for r in self.ctx.settings.lifecycle.rules if r.name == task.rule), None)
        if rule is None:  # removed from the settings since it was planned
            return LifecycleResult()
        if rule.action == "delete":
            return await self._retire(study, rule)
        if rule.action == "tier":
            return await self._tier(study, rule)
        return await self._compress(study, rule)

    async def _compress(self, study: LifecycleStudy, rule: LifecycleRule) -> LifecycleResult:
        assert rule.transfer_syntax is not None  # a compress rule names one (LifecycleRule)
        objects = await native_objects(self.ctx.pool, study.tenant, study.study_uid)
        gate = asyncio.Semaphore(COMPRESSIONS_AT_ONCE)
        made = await asyncio.gather(*(self._compressed(study, o, rule.transfer_syntax, gate) for o in objects))
        versions = [v for v in made if v is not None]
        result = LifecycleResult(compressed=len(versions), skipped=len(objects) - len(versions))
        result.bytes_after = sum(v.size for v in versions)
        result.bytes_before = sum(await self.ctx.in_background(self._sizes, [v.old_key for v in versions]))
        gone = await switch_versions(self.ctx.pool, study.tenant, study.study_uid, versions) if versions else []
        await remove_queued(
            self.ctx.pool, self.ctx.blobs, gone, "an object replaced by its compressed version", self.ctx.in_background
        )
        saved = result.bytes_before - result.bytes_after
        await mark_done(self.ctx.pool, study.tenant, study.study_uid, rule.name, f"{len(versions)} compressed", saved)
        if versions:  # its series documents name the pixel data's new VR: the study workflow rewrites them
            s = self.ctx.settings
            await signal_study(
                activity.client(), s.temporal.task_queue, study.tenant, study.study_uid, 0, None, s.ingest.stable_seconds
            )
        return result

    def _sizes(self, keys: list[str]) -> list[int]:
        return [self.ctx.blobs.size(key) for key in keys]

    async def _compressed(
        self, study: LifecycleStudy, stored: StoredObject, syntax: str, gate: asyncio.Semaphore
    ) -> NewVersion | None:
        async with gate:
            activity.heartbeat(stored.sop_uid)
            key = instance_key(
                study.tenant, stored.study_date, study.study_uid, stored.series_uid, stored.sop_uid, new_write_id()
            )
            return await self.ctx.in_background(self._write, stored, key, syntax)

    def _write(self, stored: StoredObject, key: str, syntax: str) -> NewVersion | None:
        """In a decode pool worker; committed under `key` once it matched the original bit for bit."""
        blobs = self.ctx.blobs
        spool = blobs.new_spool_file()
        try:
            with blobs.local_copy(stored.blob_key) as source:
                shared_pool(self.ctx.settings.decode.pool_limits).run(write_compressed, str(source), str(spool), syntax)
            staged = blobs.stage_file(spool)
            blobs.commit(staged, key)
            return NewVersion(stored.sop_uid, stored.blob_key, key, staged.sha256, staged.size, syntax)
        except NotCompressible:
            return None
        except DecodeRefused as err:
            if err.deterministic:  # too large, or a codestream it cannot decode: left as received
                return None
            raise  # busy, or a timeout on a loaded machine: Temporal retries the step
        finally:
            spool.unlink(missing_ok=True)

    async def _tier(self, study: LifecycleStudy, rule: LifecycleRule) -> LifecycleResult:
        store = self.ctx.blobs
        if not isinstance(store, TieredBlobStore):
            raise ApplicationError("no cold store: set cold_blob_dir or cold_s3_endpoint", non_retryable=True)
        objects = await hot_objects(self.ctx.pool, study.tenant, study.study_uid)
        result = LifecycleResult()
        for start in range(0, len(objects), TIER_MARK_EVERY):
            batch = objects[start : start + TIER_MARK_EVERY]
            activity.heartbeat(f"{start} of {len(objects)} moved")
            # a move mostly waits for fsyncs and the cold store: two at a time, on niced background threads
            lanes = await asyncio.gather(
                *(self.ctx.in_background(self._move, store, batch[i::TIER_MOVES_AT_ONCE]) for i in range(TIER_MOVES_AT_ONCE))
            )
            moved = [o for lane in lanes for o in lane]
            result.tiered += await mark_cold(self.ctx.pool, study.tenant, {o.sop_uid: o.blob_key for o in moved})
            result.bytes_tiered += sum(o.size for o in moved)
        await mark_done(self.ctx.pool, study.tenant, study.study_uid, rule.name, f"{result.tiered} moved to the cold store")
        return result

    @staticmethod
    def _move(store: TieredBlobStore, objects: list[HotObject]) -> list[HotObject]:
        """On a background thread; the objects whose cold copy checked out (one gone meanwhile, a
        correction's or a deletion's doing, is left out)."""
        return [o for o in objects if move_to_cold(store, o.blob_key, o.sha256)]

    async def _retire(self, study: LifecycleStudy, rule: LifecycleRule) -> LifecycleResult:
        sops = await reject_for_retention(self.ctx.pool, study.tenant, study.study_uid, f"lifecycle:{rule.name}")
        if not sops:
            return LifecycleResult()
        reason = {"reason": "retention (113039 Data Retention Policy Expired)", "rule": rule.name}
        deleted = await delete_withdrawn(self.ctx, study.tenant, study.study_uid, sops, f"lifecycle:{rule.name}", reason)
        return LifecycleResult(deleted=deleted)
