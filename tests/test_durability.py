"""Nothing acknowledged is lost: a killed worker, an unsignalled instance, a corrupted blob."""

from __future__ import annotations

import asyncio
import io
import os
import signal
import time

import psycopg
import requests
from pydicom import dcmread
from pydicom.filewriter import dcmwrite
from pydicom.uid import generate_uid
from temporalio.client import WorkflowExecutionStatus

from archive.blobstore import LocalBlobStore
from archive.index.instances import stalled_studies
from archive.index.lifecycle import commit_checked
from archive.index.pool import open_index_pool
from archive.services.receipt import Receiver
from receiving.reconciler import redrive_stalled_once
from testkit.temporal_waits import client_for, wait_completed
from tests.auth import auth_headers
from tests.conftest import run
from tests.test_dimse import _store


def new_study(data_dir, n: int = 4) -> list[bytes]:
    """Real MR files re-stamped into a study no other test uses."""
    study, series = generate_uid(), generate_uid()
    out = []
    for path in sorted(p for p in (data_dir / "dcm_qa_ge").rglob("*") if p.is_file())[:n]:
        ds = dcmread(path)
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        buf = io.BytesIO()
        dcmwrite(buf, ds, enforce_file_format=True)
        out.append(buf.getvalue())
    return out


def study_of(payload: bytes) -> str:
    return str(dcmread(io.BytesIO(payload), stop_before_pixels=True).StudyInstanceUID)


def worker_pids(stack) -> list[int]:
    return [p.pid for p in stack.descendants() if "WorkflowWorkerActor" in " ".join(p.cmdline())]


def test_killed_worker_mid_study_still_completes(stack, data_dir):
    payloads = new_study(data_dir, 6)
    before = worker_pids(stack)
    assert before, "the workflow worker actor should be running"
    for payload in payloads:
        assert _store(stack, payload).Status == 0
    # killed while the study waits to turn quiet: its steps can only run on the restarted worker
    for pid in before:
        os.kill(pid, signal.SIGKILL)
    wid = f"study:default:{study_of(payloads[0])}"
    statuses = run(wait_completed(stack.settings, [wid], timeout=240))
    assert statuses[wid] == WorkflowExecutionStatus.COMPLETED
    after = worker_pids(stack)
    assert after and set(after).isdisjoint(before), "Ray restarted the worker"


def _receive_without_signal(stack, tenant: str, payloads: list[bytes]):
    """Receipt with no workflow signal at all: as if Temporal had been down."""
    blobs = LocalBlobStore(stack.settings.var_path / "blobs")

    async def go():
        pool = await open_index_pool(stack.settings.effective_postgres_dsn(), max_size=2)
        try:
            return [await Receiver(blobs, pool).receive(tenant, blobs.stage_bytes(p), "test") for p in payloads]
        finally:
            await pool.close()

    return run(go())


def test_outbox_reconciler_signals_what_was_never_signalled(stack, data_dir):
    payloads = new_study(data_dir, 3)
    receipts = _receive_without_signal(stack, "outbox", payloads)
    assert all(r.outcome.ok for r in receipts)
    wid = f"study:outbox:{study_of(payloads[0])}"
    statuses = run(wait_completed(stack.settings, [wid], timeout=120))
    assert statuses[wid] == WorkflowExecutionStatus.COMPLETED
    # the reconciler takes rows once they are old enough: a receipt a moment younger than the rest
    # is signalled on its next round, possibly after the run its elders started has completed
    deadline = time.monotonic() + 60
    with psycopg.connect(stack.settings.effective_postgres_dsn(), autocommit=True) as conn:
        while True:
            rows = conn.execute("SELECT signalled, state FROM instance WHERE tenant = 'outbox'").fetchall()
            if all(signalled for signalled, _ in rows) or time.monotonic() > deadline:
                break
            time.sleep(0.5)
    assert rows == [(True, "committed")] * 3


def test_reconciler_redrives_a_study_whose_workflow_state_was_lost(stack, data_dir):
    payloads = new_study(data_dir, 2)
    receipts = _receive_without_signal(stack, "lost", payloads)
    dsn = stack.settings.effective_postgres_dsn()
    with psycopg.connect(dsn) as conn:  # the signal was acknowledged, then Temporal lost it
        conn.execute("UPDATE instance SET signalled = true WHERE tenant = 'lost'")
    wid = f"study:lost:{study_of(payloads[0])}"

    async def redrive(twice: bool = False):
        client = await client_for(stack.settings)
        pool = await open_index_pool(dsn, max_size=2)
        try:
            first = await redrive_stalled_once(client, pool, stack.settings, older_than_seconds=0)
            if not twice:
                return first
            # again, once Temporal's (eventually consistent) visibility lists the workflow as running,
            # as it does long before the reconciler's next round: still unprocessed, but running
            for _ in range(100):
                if [w async for w in client.list_workflows(f"WorkflowId = '{wid}' AND ExecutionStatus = 'Running'")]:
                    break
                await asyncio.sleep(0.1)
            still = [row[1] for row in await stalled_studies(pool, 0)]
            return first, still, await redrive_stalled_once(client, pool, stack.settings, older_than_seconds=0)
        finally:
            await pool.close()

    first, still, again = run(redrive(twice=True))
    assert first == 1
    assert study_of(payloads[0]) in still and again == 0, "a running workflow must not be signalled again"
    statuses = run(wait_completed(stack.settings, [wid], timeout=120))
    assert statuses[wid] == WorkflowExecutionStatus.COMPLETED
    with psycopg.connect(dsn) as conn:
        states = conn.execute("SELECT state FROM instance WHERE tenant = 'lost'").fetchall()
    assert states == [("committed",)] * len(receipts)
    assert run(redrive()) == 0  # nothing left to re-drive


def test_corrupted_blob_ends_in_a_visible_failed_state(stack, data_dir):
    payloads = new_study(data_dir, 2)
    receipts = _receive_without_signal(stack, "corrupt", payloads)
    victim = stack.settings.var_path / "blobs" / receipts[0].blob_key
    data = bytearray(victim.read_bytes())
    data[-100:] = b"\xff" * 100  # bit rot after receipt
    victim.write_bytes(bytes(data))
    wid = f"study:corrupt:{study_of(payloads[0])}"
    statuses = run(wait_completed(stack.settings, [wid], timeout=120))
    assert statuses[wid] == WorkflowExecutionStatus.COMPLETED  # it ends, it does not retry forever

    async def outcome():
        client = await client_for(stack.settings)
        return await client.get_workflow_handle(wid).result()

    result = run(outcome())
    assert result["state"] == "failed" and result["failed"] == 1
    with psycopg.connect(stack.settings.effective_postgres_dsn()) as conn:
        rows = dict(conn.execute("SELECT sop_uid, failure_reason FROM instance WHERE tenant = 'corrupt'").fetchall())
    assert "SHA-256" in rows[receipts[0].attributes.sop_uid]
    assert rows[receipts[1].attributes.sop_uid] is None


def _wado_uri(stack, tenant: str, payload: bytes) -> requests.Response:
    ds = dcmread(io.BytesIO(payload), stop_before_pixels=True)
    params = {
        "requestType": "WADO",
        "studyUID": str(ds.StudyInstanceUID),
        "seriesUID": str(ds.SeriesInstanceUID),
        "objectUID": str(ds.SOPInstanceUID),
    }
    return requests.get(stack.url("/dicomweb/wado"), params=params, headers=auth_headers(tenant), timeout=30)


def _wait_committed(stack, tenant: str, sop_uid: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    with psycopg.connect(stack.settings.effective_postgres_dsn(), autocommit=True) as conn:
        while time.monotonic() < deadline:
            row = conn.execute("SELECT state FROM instance WHERE tenant = %s AND sop_uid = %s", (tenant, sop_uid)).fetchone()
            if row == ("committed",):
                return
            time.sleep(0.5)
    raise AssertionError(f"{sop_uid} was not committed again")


def test_resend_rewrites_an_object_lost_from_the_blob_store(stack, data_dir):
    payloads = new_study(data_dir, 2)
    for payload in payloads:
        assert _store(stack, payload).Status == 0
    wid = f"study:default:{study_of(payloads[0])}"
    assert run(wait_completed(stack.settings, [wid], timeout=120))[wid] == WorkflowExecutionStatus.COMPLETED
    sop = str(dcmread(io.BytesIO(payloads[0]), stop_before_pixels=True).SOPInstanceUID)
    with psycopg.connect(stack.settings.effective_postgres_dsn()) as conn:
        (key,) = conn.execute("SELECT blob_key FROM instance WHERE tenant = 'default' AND sop_uid = %s", (sop,)).fetchone()
    lost = stack.settings.var_path / "blobs" / key
    stored = lost.read_bytes()  # as the SCP wrote it: the File Meta is its own, not the sender's
    lost.unlink()  # gone from the disk behind the archive's back
    assert _wado_uri(stack, "default", payloads[0]).status_code != 200
    assert _store(stack, payloads[0]).Status == 0  # the modality sends it again
    read = _wado_uri(stack, "default", payloads[0])
    assert read.status_code == 200 and read.content == stored


def test_resend_repairs_an_instance_that_failed_verification(stack, data_dir):
    payloads = new_study(data_dir, 2)
    receipts = _receive_without_signal(stack, "refailed", payloads)
    victim = stack.settings.var_path / "blobs" / receipts[0].blob_key
    victim.write_bytes(payloads[0][:-100] + b"\xff" * 100)  # bit rot after receipt
    wid = f"study:refailed:{study_of(payloads[0])}"
    assert run(wait_completed(stack.settings, [wid], timeout=120))[wid] == WorkflowExecutionStatus.COMPLETED
    assert _wado_uri(stack, "refailed", payloads[0]).status_code == 404  # failed: not served
    sop = receipts[0].attributes.sop_uid
    stow = requests.post(
        stack.url("/dicomweb/studies"),
        data=_multipart(payloads[0]),
        timeout=60,
        headers={**auth_headers("refailed"), "Content-Type": 'multipart/related; type="application/dicom"; boundary=r'},
    )
    assert stow.status_code == 200, stow.text
    _wait_committed(stack, "refailed", sop)  # verified and committed again by its workflow
    read = _wado_uri(stack, "refailed", payloads[0])
    assert read.status_code == 200 and read.content == payloads[0]


def _multipart(payload: bytes) -> bytes:
    return b"--r\r\nContent-Type: application/dicom\r\n\r\n" + payload + b"\r\n--r--\r\n"


def test_a_pass_commits_only_the_bytes_it_checked(stack, data_dir):
    """A pass reads each received blob back, then commits it by SOP Instance UID and blob key: an
    instance whose bytes were replaced in between (a new key) stays received, for the next pass."""
    (receipt,) = _receive_without_signal(stack, "checked", new_study(data_dir, 1))
    sop_uid, dsn = receipt.attributes.sop_uid, stack.settings.effective_postgres_dsn()

    async def commit(blob_key: str) -> int:
        pool = await open_index_pool(dsn, max_size=1)
        try:
            return await commit_checked(pool, "checked", [(sop_uid, blob_key)])
        finally:
            await pool.close()

    def state() -> str:
        with psycopg.connect(dsn) as conn:
            return conn.execute("SELECT state FROM instance WHERE tenant = 'checked' AND sop_uid = %s", (sop_uid,)).fetchone()[0]

    assert run(commit(receipt.blob_key + ".other-write")) == 0
    assert state() == "received"
    assert run(commit(receipt.blob_key)) == 1
    assert state() == "committed"
