"""Storage commitment steps: is every referenced instance committed, and the report to the AE
on a new association (unless the SCP already delivered it on the requester's open one)."""

from __future__ import annotations

import asyncio
import ssl

from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.context import ActivityContext
from activities.event_report import send_event_report
from archive.config.peers import AEEntry
from archive.config.settings import Settings
from archive.index import commitments
from archive.services.commitment import Classified, UnknownTransaction, classify, report_dataset
from contract import names
from contract.payloads import CommitmentReport, CommitmentRequest, CommitmentStatus
from dimse.store_scu import DestinationUnavailable, outbound_tls


def _tls(settings: Settings, requester: str, peer: AEEntry) -> ssl.SSLContext | None:
    """DICOM TLS to the requester when its AE table entry says so; not retried when the settings cannot give it."""
    try:
        return outbound_tls(settings.tls, requester, peer)
    except DestinationUnavailable as err:
        raise ApplicationError(str(err), non_retryable=True) from None


class CommitmentActivities:
    def __init__(self, ctx: ActivityContext) -> None:
        self.ctx = ctx

    def all(self) -> list:
        return [self.check, self.report]

    async def _classify(self, request: CommitmentRequest, final: bool) -> Classified:
        try:
            return await classify(self.ctx.pool, request.tenant, request.transaction_uid, final, request.unknown_grace_seconds)
        except UnknownTransaction:
            raise ApplicationError(f"no commitment request {request.transaction_uid}", non_retryable=True) from None

    @activity.defn(name=names.COMMITMENT_CHECK)
    async def check(self, request: CommitmentRequest) -> CommitmentStatus:
        found = await self._classify(request, final=False)
        if found.row.state == "reported":  # the SCP reported on the open association: nothing is pending
            return CommitmentStatus(len(found.committed), len(found.failed), 0)
        return CommitmentStatus(len(found.committed), len(found.failed), len(found.pending), found.unknown_wait)

    @activity.defn(name=names.COMMITMENT_REPORT)
    async def report(self, request: CommitmentRequest) -> CommitmentReport:
        found = await self._classify(request, final=True)
        if found.row.state == "reported":
            return CommitmentReport(True, 0, "reported on the requester's open association")
        pool, settings = self.ctx.pool, self.ctx.settings
        peer = settings.dimse.ae_table.get(found.row.calling_ae)
        if peer is None or not peer.reachable:
            await commitments.record_outcome(
                pool, request.tenant, request.transaction_uid, "undeliverable", found.committed, found.failed
            )
            raise ApplicationError(
                f"calling AE {found.row.calling_ae!r} has no address in the AE table: add its host and port to 'ae_table'",
                non_retryable=True,
            )
        if not await commitments.claim_report(pool, request.tenant, request.transaction_uid):
            raise ApplicationError("the report is being sent on the requester's open association; checking again")
        event_type = 2 if found.failed else 1
        ds = report_dataset(request.transaction_uid, found.committed, found.failed)
        try:
            await asyncio.to_thread(
                send_event_report,
                settings.dimse.ae_title,
                found.row.calling_ae,
                peer,
                ds,
                event_type,
                _tls(settings, found.row.calling_ae, peer),
            )
        except BaseException:
            await commitments.release_claim(pool, request.tenant, request.transaction_uid)
            raise
        await commitments.record_outcome(pool, request.tenant, request.transaction_uid, "reported", found.committed, found.failed)
        return CommitmentReport(True, event_type, f"{len(found.committed)} committed, {len(found.failed)} failed")
