"""A forward's owed instances over STOW-RS (PS3.18 10.5): a batch of stored objects a request, with
an OAuth2 client-credentials token when the rule names a token URL. Each instance's outcome is read
from the response (FailedSOPSequence with its FailureReason) and recorded before the next batch, so
a retried attempt resumes after what the destination answered."""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
import uuid
from typing import Any

import httpx
from pydicom.dataset import Dataset
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.context import ActivityContext
from archive.blobstore import BlobNotFound
from archive.dicom import dicom_status as st
from archive.index import retrieves
from archive.index.retrieves import COMPLETED, FAILED, ItemToSend
from archive.index.slots import NoSlotFree, destination_slot
from archive.routing.registry import rule_in_force
from archive.routing.rules import ForwardRule, ForwardTarget
from contract import names
from contract.payloads import ForwardSend

log = logging.getLogger("dicomflow.routing.stow")
Outcome = tuple[int, str, int | None]  # (position, state, status) of one item
BATCH = 20
MAX_BATCH_BYTES = 64 * 2**20  # a batch is one request body held in memory
TIMEOUT_SECONDS = 120.0
MAX_RESPONSE_BYTES = 4 * 2**20  # a STOW-RS response lists each instance once: a few KiB for a batch
REFUSED_FOR_GOOD = {400, 401, 403, 404, 413, 415}  # a retry would be refused the same way: a setting to fix


class StowForwardActivities:
    def __init__(self, ctx: ActivityContext) -> None:
        self.ctx = ctx
        self._tokens: dict[str, tuple[str, float]] = {}  # token URL + client -> (token, expires at)

    def all(self) -> list:
        return [self.send]

    async def _rule(self, name: str) -> ForwardRule:
        rule = await rule_in_force(self.ctx.settings.routing, self.ctx.pool, name)
        if rule is not None and rule.to.stow:
            return rule
        raise ApplicationError(f"forward rule {name!r} with a STOW-RS destination is no longer in force", non_retryable=True)

    @activity.defn(name=names.FORWARD_STOW_SEND)
    async def send(self, job: ForwardSend) -> int:
        """How many this attempt sent; raises (to be retried) while the destination cannot answer."""
        target = (await self._rule(job.request.rule)).to
        try:
            async with destination_slot(
                self.ctx.settings.effective_postgres_dsn(), job.request.destination_ae, target.max_associations
            ):
                return await self._send_owed(target, job)
        except NoSlotFree as err:
            raise ApplicationError(str(err)) from None

    async def _send_owed(self, target: ForwardTarget, job: ForwardSend) -> int:
        sent = 0
        async with httpx.AsyncClient(verify=_verify(target), timeout=TIMEOUT_SECONDS) as http:
            while items := await retrieves.pending(self.ctx.pool, job.retrieve.retrieve_id, BATCH):
                sent += await self._send_batch(http, target, job, items)
                activity.heartbeat(items[-1].position)
        return sent

    async def _send_batch(self, http: httpx.AsyncClient, target: ForwardTarget, job: ForwardSend, items: list[ItemToSend]) -> int:
        parts, sending, missing = await asyncio.to_thread(self._read, items)
        outcomes: list[Outcome] = [(item.position, FAILED, st.NO_SUCH_OBJECT_INSTANCE) for item in missing]
        if parts:
            outcomes += _outcomes(await self._post(http, target, parts), sending)
        await retrieves.record_outcomes(self.ctx.pool, job.retrieve.retrieve_id, outcomes)
        return sum(1 for _, state, _ in outcomes if state == COMPLETED)

    def _read(self, items: list[ItemToSend]) -> tuple[list[bytes], list[ItemToSend], list[ItemToSend]]:
        """The bodies of the items that fit one request, those items, and those deleted meanwhile;
        items past the size bound stay pending for the next batch."""
        parts: list[bytes] = []
        sending: list[ItemToSend] = []
        missing: list[ItemToSend] = []
        for item in items:
            body = self._bytes(item)
            if body is None:
                missing.append(item)
                continue
            if parts and sum(map(len, parts)) + len(body) > MAX_BATCH_BYTES:
                break
            parts.append(body)
            sending.append(item)
        return parts, sending, missing

    def _bytes(self, item: ItemToSend) -> bytes | None:
        if item.blob_key is None:
            return None  # deleted since the round was listed
        try:
            return self.ctx.blobs.read_bytes(item.blob_key)
        except BlobNotFound:
            return None

    async def _post(self, http: httpx.AsyncClient, target: ForwardTarget, parts: list[bytes]) -> httpx.Response:
        boundary = uuid.uuid4().hex
        body = b"".join(b"--" + boundary.encode() + b"\r\nContent-Type: application/dicom\r\n\r\n" + p + b"\r\n" for p in parts)
        body += b"--" + boundary.encode() + b"--\r\n"
        headers = {
            "Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}',
            "Accept": "application/dicom+json",
        }
        for fresh in (False, True):  # a token the server no longer takes is fetched again once
            token = await self._token(http, target, fresh)
            try:
                answer = await _bounded(
                    http,
                    f"{(target.stow or '').rstrip('/')}/studies",
                    content=body,
                    headers={**headers, **({"Authorization": f"Bearer {token}"} if token else {})},
                )
            except httpx.HTTPError as err:
                raise ApplicationError(f"STOW-RS to {target.stow} failed: {type(err).__name__}: {err}") from None
            if answer.status_code != 401 or not token or fresh:
                break
        if answer.status_code in REFUSED_FOR_GOOD and answer.status_code != 409:
            raise ApplicationError(
                f"{target.stow} refused the request with {answer.status_code}: {answer.text[:300]}", non_retryable=True
            )
        if answer.status_code >= 500 or answer.status_code == 429:
            raise ApplicationError(f"{target.stow} answered {answer.status_code}; retrying")
        return answer

    async def _token(self, http: httpx.AsyncClient, target: ForwardTarget, fresh: bool) -> str | None:
        if not target.token_url:
            return None
        key = f"{target.token_url}|{target.client_id}"
        cached = self._tokens.get(key)
        if cached and not fresh and cached[1] > time.monotonic() + 30:
            return cached[0]
        assert target.client_secret_file is not None
        secret = (await asyncio.to_thread(target.client_secret_file.read_text)).strip()
        form = {"grant_type": "client_credentials", "client_id": target.client_id or "", "client_secret": secret}
        try:
            answer = await _bounded(http, target.token_url, data=form)
        except httpx.HTTPError as err:
            raise ApplicationError(f"token endpoint {target.token_url} unreachable: {err}") from None
        if answer.status_code != 200:
            raise ApplicationError(
                f"token endpoint {target.token_url} refused the client: {answer.status_code} {answer.text[:200]}"
            )
        grant = answer.json()
        self._tokens[key] = (str(grant["access_token"]), time.monotonic() + float(grant.get("expires_in", 60)))
        return self._tokens[key][0]


class ResponseTooLarge(httpx.HTTPError):
    """The destination answered more than MAX_RESPONSE_BYTES: not a STOW-RS response we read."""


async def _bounded(http: httpx.AsyncClient, url: str, **request: Any) -> httpx.Response:
    """A POST whose answer is read only up to MAX_RESPONSE_BYTES: the destination is another system,
    and a hostile or broken one must not make the worker hold whatever it sends."""
    async with http.stream("POST", url, **request) as answer:
        body = bytearray()
        async for chunk in answer.aiter_bytes():
            body += chunk
            if len(body) > MAX_RESPONSE_BYTES:
                raise ResponseTooLarge(f"{url} answered more than {MAX_RESPONSE_BYTES} bytes")
    headers = [(k, v) for k, v in answer.headers.multi_items() if k.lower() not in ("content-encoding", "content-length")]
    return httpx.Response(answer.status_code, headers=headers, content=bytes(body), request=answer.request)


def _verify(target: ForwardTarget) -> ssl.SSLContext | bool:
    return ssl.create_default_context(cafile=str(target.ca_file)) if target.ca_file else True


def _outcomes(answer: httpx.Response, items: list[ItemToSend]) -> list[Outcome]:
    """Each sent item's state from the STOW-RS response: failed where the FailedSOPSequence names it
    (with its FailureReason), stored otherwise when the request succeeded (200, 202)."""
    failed: dict[str, int] = {}
    if answer.headers.get("content-type", "").startswith("application/dicom+json") and answer.content:
        response = Dataset.from_json(answer.json()) if isinstance(answer.json(), dict) else None
        for entry in response.get("FailedSOPSequence", []) if response is not None else []:
            failed[str(entry.get("ReferencedSOPInstanceUID", ""))] = int(entry.get("FailureReason", st.PROCESSING_FAILURE))
    stored = answer.status_code in (200, 202)
    outcomes: list[Outcome] = []
    for item in items:
        if item.sop_uid in failed:
            outcomes.append((item.position, FAILED, failed[item.sop_uid]))
        elif stored:
            outcomes.append((item.position, COMPLETED, st.SUCCESS))
        else:
            outcomes.append((item.position, FAILED, st.PROCESSING_FAILURE))
    return outcomes
