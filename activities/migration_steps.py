"""The steps of a migration from a legacy archive (workflows/migration.py): find a day's studies on
the source by C-FIND, move each by C-MOVE to this archive's own AE title (the studies come back
through the ordinary C-STORE receipt, into the tenant the source's AE-table entry names), and
verify that the archive then holds as many of the study's instances as the source has.

C-MOVEs to one source are bounded across every worker and migration by its slots (the same
PostgreSQL advisory-lock slots forwards use, archive/index/slots.py): a legacy PACS is fragile.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TypeVar

from pydicom.dataset import Dataset
from pynetdicom.association import Association
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.context import ActivityContext
from archive.config.peers import AEEntry
from archive.index import migration_progress as progress
from archive.index.migration_progress import FoundStudy
from archive.index.slots import NoSlotFree, destination_slot
from archive.migration.source_check import migration_tenant, source_refusal
from archive.migration.source_queries import (
    HOURS,
    count_of,
    found_study,
    image_query,
    modalities_of,
    move_identifier,
    series_query,
    study_query,
)
from contract import names
from contract.payloads import MigrationCounts, MigrationDay, MigrationFailure, MigrationRequest, MigrationStudy, StudyMigrated
from dimse.qr_scu import (
    CANCEL,
    MOVE_DESTINATION_UNKNOWN,
    PENDING,
    SUCCESS,
    FindAnswer,
    MoveResult,
    find,
    move,
    open_qr_association,
)
from dimse.store_scu import DestinationUnavailable, outbound_tls, release

log = logging.getLogger("dicomflow.migration")
T = TypeVar("T")
NEXT_BATCH = 100  # studies a day's workflow takes from the index at a time
HEARTBEAT_EVERY = 5.0  # seconds; the workflow's heartbeat timeout is 60 s
ANSWER_TIMEOUT = 300.0  # seconds a legacy PACS may take for its next answer (a pending C-MOVE response)


class MigrationActivities:
    def __init__(self, ctx: ActivityContext) -> None:
        self.ctx = ctx

    def all(self) -> list:
        return [self.begin, self.find_day, self.next_studies, self.move_study, self.fail_study, self.finish]

    def _source(self, source_ae: str, tenant: str) -> AEEntry:
        """The source's AE-table entry, checked again here: the settings may have changed since the
        migration started, and a workflow started by anyone who reached Temporal must not pull a
        source's studies into another tenant than the one its C-STOREs land in."""
        settings = self.ctx.settings
        refusal = source_refusal(settings.dimse, source_ae)
        if refusal:
            raise ApplicationError(refusal, non_retryable=True)
        if migration_tenant(settings, source_ae) != tenant:
            raise ApplicationError(f"{source_ae}'s studies are received into another tenant than {tenant!r}", non_retryable=True)
        return settings.dimse.ae_table[source_ae]

    async def _associate(self, source_ae: str, peer: AEEntry) -> Association:
        try:
            tls = outbound_tls(self.ctx.settings.tls, source_ae, peer)
            return await asyncio.to_thread(
                open_qr_association, self.ctx.settings.dimse.ae_title, source_ae, peer, ANSWER_TIMEOUT, tls
            )
        except DestinationUnavailable as err:
            raise ApplicationError(f"{err}: is the source up, and does it accept {self.ctx.settings.dimse.ae_title!r}?") from None

    @activity.defn(name=names.MIGRATE_BEGIN)
    async def begin(self, request: MigrationRequest) -> int:
        self._source(request.source_ae, request.tenant)
        return await progress.begin(
            self.ctx.pool, request.key, request.tenant, request.source_ae, request.since, request.until, request.modalities
        )

    @activity.defn(name=names.MIGRATE_FINISH)
    async def finish(self, request: MigrationRequest) -> str:
        return await progress.finish(self.ctx.pool, request.key)

    @activity.defn(name=names.MIGRATE_FIND_DAY)
    async def find_day(self, day: MigrationDay) -> MigrationCounts:
        """The day's studies on the source, recorded in the index (once: a resumed day is not asked again)."""
        request = day.request
        searched = await progress.day_searched(self.ctx.pool, request.key, day.day)
        if searched is not None:
            return MigrationCounts(found=searched[0], capped_days=int(searched[1]))
        peer = self._source(request.source_ae, request.tenant)
        assoc = await self._associate(request.source_ae, peer)
        try:
            studies, capped = await _beating(self._search_day, assoc, request, day.day)
        finally:
            await asyncio.to_thread(release, assoc)
        if capped:
            log.warning("migration %s: the source capped its answers for %s even hour by hour", request.key, day.day)
        await progress.record_day(self.ctx.pool, request.key, day.day, studies, capped)
        return MigrationCounts(found=len(studies), capped_days=int(capped))

    def _search_day(self, assoc: Association, request: MigrationRequest, day: str) -> tuple[list[FoundStudy], bool]:
        """(studies, capped): one C-FIND per modality asked for (or one for all), hour by hour where
        the day's answer hit the source's cap."""
        found: dict[str, FoundStudy] = {}
        capped = False
        asked: list[str | None] = [*request.modalities] or [None]
        for modality in asked:
            answer = _find(assoc, study_query(day, modality))
            answers = answer.identifiers
            if _capped(answer, request.find_limit):
                log.info("migration %s: %s: %d answers hit the cap; asking hour by hour", request.key, day, len(answers))
                answers = []
                for hours in HOURS:
                    part = _find(assoc, study_query(day, modality, hours))
                    capped = capped or _capped(part, request.find_limit)
                    answers += part.identifiers
            for identifier in answers:
                study = found_study(identifier)
                if study and self._wanted(assoc, identifier, study, request.modalities):
                    found.setdefault(study.study_uid, study)
        return list(found.values()), capped

    @staticmethod
    def _wanted(assoc: Association, answer: Dataset, study: FoundStudy, modalities: list[str]) -> bool:
        """Whether the study has a modality asked for; a source that ignores ModalitiesInStudy (or
        leaves it empty) is asked for the study's series."""
        if not modalities:
            return True
        held = modalities_of(answer)
        if not held:
            held = set().union(*(modalities_of(s, "Modality") for s in _find(assoc, series_query(study.study_uid)).identifiers))
        return bool(held & {m.upper() for m in modalities})

    @activity.defn(name=names.MIGRATE_NEXT)
    async def next_studies(self, day: MigrationDay) -> list[MigrationStudy]:
        request = day.request
        studies = await progress.pending(self.ctx.pool, request.key, day.day, NEXT_BATCH)
        return [
            MigrationStudy(request.key, request.tenant, request.source_ae, s.study_uid, s.expected, request.concurrency)
            for s in studies
        ]

    @activity.defn(name=names.MIGRATE_FAIL)
    async def fail_study(self, failure: MigrationFailure) -> None:
        study = failure.study
        log.warning("migration %s: study %s failed: %s", study.key, study.study_uid, failure.reason)
        await progress.mark_failed(self.ctx.pool, study.key, study.study_uid, failure.reason)

    @activity.defn(name=names.MIGRATE_MOVE)
    async def move_study(self, study: MigrationStudy) -> StudyMigrated:
        """Pull the study unless it is verified already; verified once the archive holds as many of
        its instances as the source has. Raises (to be retried with backoff) while it is short."""
        state = await progress.study_state(self.ctx.pool, study.key, study.study_uid)
        if state is not None and state[0] == "verified":
            return StudyMigrated("verified", state[1], "verified before")  # never pulled twice
        peer = self._source(study.source_ae, study.tenant)
        slots = study.slots or self.ctx.settings.migration.concurrency
        try:
            async with destination_slot(self.ctx.settings.effective_postgres_dsn(), f"migrate:{study.source_ae}", slots):
                return await self._pull(study, peer)
        except NoSlotFree as err:
            raise ApplicationError(f"{err}: other migrations from {study.source_ae} are moving") from None

    async def _pull(self, study: MigrationStudy, peer: AEEntry) -> StudyMigrated:
        assoc = await self._associate(study.source_ae, peer)
        try:
            expected = study.expected if study.expected is not None else await _beating(_count_on_source, assoc, study.study_uid)
            held = await progress.held_instances(self.ctx.pool, study.tenant, study.study_uid)
            if expected is not None and held >= expected:
                detail = f"already in the archive ({held} of {expected} instances)"
                await progress.mark_verified(self.ctx.pool, study.key, study.study_uid, held, detail)
                return StudyMigrated("verified", held, detail)
            await progress.mark_moving(self.ctx.pool, study.key, study.study_uid, expected)
            result = await _beating(self._move, assoc, study.study_uid)
        finally:
            await asyncio.to_thread(release, assoc)
        return await self._verify(study, expected, result)

    def _move(self, assoc: Association, study_uid: str) -> MoveResult:
        destination = self.ctx.settings.dimse.ae_title
        result = move(assoc, move_identifier(study_uid), destination, lambda done: None)
        if result.status == MOVE_DESTINATION_UNKNOWN:
            raise ApplicationError(
                f"the source does not know the move destination {destination!r} (status A801): add {destination} with this "
                f"archive's address (port {self.ctx.settings.dimse.port}) to the source's AE configuration",
                non_retryable=True,
            )
        return result

    async def _verify(self, study: MigrationStudy, expected: int | None, result: MoveResult) -> StudyMigrated:
        """Verified when the archive holds every instance the source counted (or, where it gave no
        count, every one its C-MOVE tried to send); a short study is retried."""
        held = await progress.held_instances(self.ctx.pool, study.tenant, study.study_uid)
        wanted = expected if expected is not None else result.completed + result.warning + result.failed
        moved = (
            f"C-MOVE status {result.status:04X}: {result.completed} completed, {result.warning} warning, "
            f"{result.failed} failed{f' ({result.comment})' if result.comment else ''}"
        )
        if held >= wanted and (wanted > 0 or result.status == SUCCESS):
            detail = f"{held} of {wanted} instances; {moved}"
            await progress.mark_verified(self.ctx.pool, study.key, study.study_uid, held, detail)
            return StudyMigrated("verified", held, detail)
        detail = f"the archive holds {held} of the source's {wanted} instances after the move; {moved}"
        await progress.mark_moved(self.ctx.pool, study.key, study.study_uid, held, detail)
        raise ApplicationError(detail)


def _find(assoc: Association, identifier: Dataset) -> FindAnswer:
    answer = find(assoc, identifier)
    if answer.status not in (SUCCESS, *PENDING) and not answer.identifiers and answer.status != CANCEL:
        raise ApplicationError(f"the source refused a C-FIND (status {answer.status:04X})")
    return answer


def _capped(answer: FindAnswer, limit: int) -> bool:
    """The answer may be cut short: the source said so (out of resources, unable to process,
    cancelled) or it gave exactly as many as it gives at most."""
    return answer.status != SUCCESS or (limit > 0 and len(answer.identifiers) >= limit)


def _count_on_source(assoc: Association, study_uid: str) -> int | None:
    """The study's instances on the source: its series' counts, or their instances listed one by one
    where a series gives none. None when the source answers no series."""
    series = _find(assoc, series_query(study_uid)).identifiers
    if not series:
        return None
    total = 0
    for answer in series:
        count = count_of(answer, "NumberOfSeriesRelatedInstances")
        if count is None:
            count = len(_find(assoc, image_query(study_uid, str(answer.SeriesInstanceUID))).identifiers)
        total += count
    return total


async def _beating(work: Callable[..., T], *args: object) -> T:
    """`work(*args)` on a thread, heartbeating while it runs (a killed worker's attempt is retried
    elsewhere once the heartbeat stops). Cancelled: the association is aborted, so the thread ends."""
    running = asyncio.ensure_future(asyncio.to_thread(work, *args))
    try:
        while True:
            done, _ = await asyncio.wait([running], timeout=HEARTBEAT_EVERY)
            if done:
                return running.result()
            activity.heartbeat()
    except asyncio.CancelledError:
        for arg in args:
            if isinstance(arg, Association):
                arg.abort()
        raise
