"""Storage lifecycle (issue 30) on real data: rules applied with `dicomflow lifecycle run --as-of`
compress every uncompressed object losslessly (JPEG 2000 for the CT study, JPEG-LS for the MR
ones) and leave compressed originals alone; every object decodes to the original's pixels, as
stored and through WADO-RS; a re-run does nothing twice; a dry run changes nothing; after the
retention the studies are gone from every read path but the one on hold."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import numpy as np
import psycopg
import pytest
import requests
from pydicom import dcmread
from pydicom.uid import UID
from temporalio.client import WorkflowExecutionStatus

from contract import names
from testkit.replay import replay_all
from testkit.restamp import as_new_study
from testkit.running_stack import DICOMFLOW, REPO
from testkit.temporal_waits import wait_completed
from tests.auth import auth_headers, operator_headers
from tests.conftest import run
from tests.stowing import stow_study
from workflows.lifecycle import LifecycleRunWorkflow, LifecycleStudyWorkflow

TENANT = "life"
PYDICOM = ("pydicom-data", "data_store", "data")
CT_FILES = ["693_UNCR.dcm", "693_J2KR.dcm", "eCT_Supplemental.dcm"]  # uncompressed 16-bit signed, J2K lossless, 2-frame


def _stow(stack, payloads: list[bytes]) -> str:
    return stow_study(stack, TENANT, payloads)


def _rows(stack, study: str) -> dict[str, tuple[str, str]]:
    with psycopg.connect(stack.settings.effective_postgres_dsn()) as conn:
        rows = conn.execute(
            "SELECT sop_uid, transfer_syntax, blob_key FROM instance WHERE tenant = %s AND study_uid = %s", (TENANT, study)
        ).fetchall()
    return {sop: (syntax, key) for sop, syntax, key in rows}


def _lifecycle(stack, as_of: datetime, *extra: str) -> str:
    done = stack.cli("lifecycle", "run", "--as-of", as_of.isoformat(), *extra, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


@pytest.fixture(scope="module")
def studies(stack, data_dir) -> dict[str, dict[str, bytes]]:
    """Three studies as scanners made them: the Siemens MR series (uncompressed), the same MR image
    in nine transfer syntaxes, and CT objects (uncompressed, JPEG 2000, multi-frame enhanced)."""
    sets = {
        "mr": sorted(p for p in (data_dir / "dcm_qa_nih").rglob("*") if p.is_file()),
        "ts": sorted(p for p in (data_dir / "dcm_qa_ts").rglob("*.dcm")),
        "ct": [data_dir.joinpath(*PYDICOM, name) for name in CT_FILES],
    }
    out = {}
    for name, files in sets.items():
        payloads = as_new_study(files)
        study = _stow(stack, payloads)
        out[study] = {str(dcmread(io.BytesIO(p), stop_before_pixels=True).SOPInstanceUID): p for p in payloads}
        out[study]["name"] = name.encode()
    time.sleep(stack.settings.ingest.stable_seconds + 1)
    ids = [names.study_workflow_id(TENANT, s) for s in out]
    assert set(run(wait_completed(stack.settings, ids, timeout=240)).values()) == {WorkflowExecutionStatus.COMPLETED}
    return out


def test_rules_compress_losslessly_and_retention_deletes_all_but_the_held(stack, studies):
    later = datetime.now(UTC) + timedelta(days=40)
    before = {study: _rows(stack, study) for study in studies}
    dry = _lifecycle(stack, later, "--dry-run")
    assert all(study in dry for study in studies) and "would work on 3 study(ies)" in dry, dry
    assert {study: _rows(stack, study) for study in studies} == before, "a dry run changes nothing"

    done = _lifecycle(stack, later)
    assert "compressed" in done, done
    blobs = stack.settings.var_path / "blobs"
    for study, originals in studies.items():
        kind = originals["name"].decode()
        target = "1.2.840.10008.1.2.4.90" if kind == "ct" else "1.2.840.10008.1.2.4.80"
        for sop, (syntax, key) in _rows(stack, study).items():
            original = dcmread(io.BytesIO(originals[sop]))
            was = str(original.file_meta.TransferSyntaxUID)
            assert syntax == (was if UID(was).is_compressed else target), (kind, sop, was, syntax)
            stored = dcmread(blobs / key)
            assert str(stored.file_meta.TransferSyntaxUID) == syntax and stored.SOPInstanceUID == sop
            assert np.array_equal(stored.pixel_array, original.pixel_array), f"{kind} {sop}: pixels differ"
        assert not any((blobs / key).exists() for s, (_, key) in before[study].items() if _rows(stack, study)[s][1] != key)

    # through WADO-RS a client gets the pixels it sent, decompressed or as stored
    study, originals = next((s, o) for s, o in studies.items() if o["name"] == b"mr")
    sop = next(iter(_rows(stack, study)))
    series = str(dcmread(io.BytesIO(originals[sop]), stop_before_pixels=True).SeriesInstanceUID)
    answer = requests.get(
        stack.url(f"/dicomweb/studies/{study}/series/{series}/instances/{sop}"),
        headers={
            **auth_headers(TENANT),
            "Accept": 'multipart/related; type="application/dicom"; transfer-syntax=1.2.840.10008.1.2.1',
        },
        timeout=60,
    )
    assert answer.status_code == 200
    part = answer.content[answer.content.index(b"\r\n\r\n") + 4 :]
    retrieved = dcmread(io.BytesIO(part))
    assert np.array_equal(retrieved.pixel_array, dcmread(io.BytesIO(originals[sop])).pixel_array)

    again = _lifecycle(stack, later)
    assert "0 object(s) compressed" in again, again  # nothing twice

    held = next(s for s, o in studies.items() if o["name"] == b"ct")
    assert stack.cli("hold", held, "--tenant", TENANT, "--reason", "litigation").returncode == 0
    gone = _lifecycle(stack, datetime.now(UTC) + timedelta(days=3700))
    assert "deleted" in gone, gone
    qido = requests.get(stack.url("/dicomweb/studies"), headers=auth_headers(TENANT), timeout=60).json()
    assert {s["0020000D"]["Value"][0] for s in qido} == {held}, "retention deleted all but the study on hold"
    assert all(not _rows(stack, s) for s in studies if s != held)
    listed = stack.cli("hold", "--list", "--tenant", TENANT)
    assert held in listed.stdout and "litigation" in listed.stdout
    query = "WorkflowType IN ('LifecycleRunWorkflow', 'LifecycleStudyWorkflow') AND ExecutionStatus = 'Completed'"
    assert run(replay_all(stack.settings, query, [LifecycleRunWorkflow, LifecycleStudyWorkflow])) >= 2


def run_killing_workers(stack, as_of: datetime, midway: Callable[[], bool]) -> str:
    """`dicomflow lifecycle run --as-of`, every workflow worker SIGKILLed once `midway()` says the
    work is under way; the run must still finish (on the workers Ray restarts). Its output."""
    from tests.test_query_retrieve import worker_pids

    runner = subprocess.Popen(
        [DICOMFLOW, "lifecycle", "run", "--as-of", as_of.isoformat()], env=stack.env, cwd=REPO, stdout=subprocess.PIPE, text=True
    )
    deadline = time.monotonic() + 300
    while not midway():
        assert time.monotonic() < deadline and runner.poll() is None, "the work never started"
        time.sleep(0.05)
    killed = worker_pids(stack)
    for pid in killed:
        os.kill(pid, signal.SIGKILL)
    out, _ = runner.communicate(timeout=600)
    assert runner.returncode == 0, out
    assert set(worker_pids(stack)).isdisjoint(killed), "Ray restarted the workers"
    return out


def test_a_compression_survives_a_killed_worker_and_loses_nothing(stack, data_dir):
    """SIGKILL of every workflow worker while 520 real Toshiba MR objects are being compressed: the
    run finishes on the restarted worker; every instance is there once, compressed, its blob there
    and its pixels the original's."""
    files = sorted(p for p in (data_dir / "dcm_qa_toshiba").rglob("*") if p.is_file())
    tenant = "life-kill"
    body = b"".join(b"--b\r\nContent-Type: application/dicom\r\n\r\n" + p.read_bytes() + b"\r\n" for p in files) + b"--b--\r\n"
    headers = {**auth_headers(tenant), "Content-Type": 'multipart/related; type="application/dicom"; boundary=b'}
    assert requests.post(stack.url("/dicomweb/studies"), data=body, headers=headers, timeout=300).status_code == 200
    study = str(dcmread(files[0], stop_before_pixels=True).StudyInstanceUID)
    time.sleep(stack.settings.ingest.stable_seconds + 1)
    wid = names.study_workflow_id(tenant, study)
    assert run(wait_completed(stack.settings, [wid], timeout=300)) == {wid: WorkflowExecutionStatus.COMPLETED}
    folder = stack.settings.var_path / "blobs" / tenant
    # new versions being written, the study not switched yet
    run_killing_workers(
        stack, datetime.now(UTC) + timedelta(days=40), lambda: len(list(folder.rglob("*.dcm"))) >= len(files) + 50
    )
    with psycopg.connect(stack.settings.effective_postgres_dsn()) as conn:
        rows = conn.execute(
            "SELECT sop_uid, transfer_syntax, blob_key FROM instance WHERE tenant = %s AND study_uid = %s", (tenant, study)
        ).fetchall()
    originals = {str(dcmread(p, stop_before_pixels=True).SOPInstanceUID): p for p in files}
    assert {sop for sop, _, _ in rows} == set(originals) and len(rows) == len(files), "every instance, once"
    assert {syntax for _, syntax, _ in rows} == {"1.2.840.10008.1.2.4.80"}, "every one compressed by the re-run"
    blobs = stack.settings.var_path / "blobs"
    assert all((blobs / key).exists() for _, _, key in rows)
    for sop, _, key in rows[::26]:
        assert np.array_equal(dcmread(blobs / key).pixel_array, dcmread(originals[sop]).pixel_array)


def test_a_retention_delete_survives_a_killed_worker_and_deletes_each_instance_once(stack, data_dir):
    """SIGKILL of every workflow worker while a retention rule deletes 20 studies (the 520 Toshiba MR
    objects, restamped 26 to a study): the run finishes on the restarted workers, every row and blob
    of the tenant is gone, the audit trail counts each instance's deletion exactly once, and no
    other tenant lost anything."""
    tenant, files = "life-delete", sorted(p for p in (data_dir / "dcm_qa_toshiba").rglob("*") if p.is_file())
    studies = [stow_study(stack, tenant, as_new_study(files[i : i + 26])) for i in range(0, len(files), 26)]
    time.sleep(stack.settings.ingest.stable_seconds + 1)
    ids = [names.study_workflow_id(tenant, s) for s in studies]
    assert set(run(wait_completed(stack.settings, ids, timeout=300)).values()) == {WorkflowExecutionStatus.COMPLETED}
    others_before = _instances_outside(stack, tenant)

    def some_studies_gone() -> bool:
        left = _studies_with_instances(stack, tenant)
        return 0 < left <= len(studies) - 3

    run_killing_workers(stack, datetime.now(UTC) + timedelta(days=21), some_studies_gone)
    assert _studies_with_instances(stack, tenant) == 0
    # a worker killed between a deletion's commit and its blobs' removal left them queued
    # (archive/index/blob_removals.py): the restarted worker removes them within a minute or so
    folder, deadline = stack.settings.var_path / "blobs" / tenant, time.monotonic() + 180
    while list(folder.rglob("*.dcm")) and time.monotonic() < deadline:
        time.sleep(2)
    assert not list(folder.rglob("*.dcm")), "a deleted instance's blob is left"
    with psycopg.connect(stack.settings.effective_postgres_dsn()) as conn:
        audited = conn.execute(
            "SELECT study_uid, sum((detail->>'instances')::int) FROM audit_event"
            " WHERE tenant = %s AND subject = 'lifecycle:kill-delete' GROUP BY study_uid",
            (tenant,),
        ).fetchall()
    assert {study for study, _ in audited} == set(studies)
    assert sum(count for _, count in audited) == len(files), "each instance's deletion audited exactly once"
    assert _instances_outside(stack, tenant) == others_before
    with psycopg.connect(stack.settings.effective_postgres_dsn()) as conn:
        queued = conn.execute("SELECT count(*) FROM blob_removal WHERE blob_key LIKE %s", (f"{tenant}/%",)).fetchone()[0]
    assert queued == 0, "removed blobs leave the queue"


def _studies_with_instances(stack, tenant: str) -> int:
    with psycopg.connect(stack.settings.effective_postgres_dsn()) as conn:
        return conn.execute("SELECT count(DISTINCT study_uid) FROM instance WHERE tenant = %s", (tenant,)).fetchone()[0]


def _instances_outside(stack, tenant: str) -> int:
    with psycopg.connect(stack.settings.effective_postgres_dsn()) as conn:
        return conn.execute("SELECT count(*) FROM instance WHERE tenant <> %s", (tenant,)).fetchone()[0]


def test_a_tenant_over_its_quota_is_refused_over_both_protocols_and_keeps_what_it_has(stack, data_dir):
    from tests.conftest import QUOTA_AE, QUOTA_BYTES
    from tests.test_rejection import _store_status

    files = sorted(p for p in (data_dir / "dcm_qa_nih").rglob("*") if p.is_file())  # about 216 kB each
    payloads = as_new_study(files)
    kept = len(payloads) // 2
    assert sum(map(len, payloads[:kept])) < QUOTA_BYTES < sum(map(len, payloads[: kept + 2]))
    headers = {**auth_headers("quota"), "Content-Type": 'multipart/related; type="application/dicom"; boundary=b'}

    def stow(parts: list[bytes]) -> requests.Response:
        body = b"".join(b"--b\r\nContent-Type: application/dicom\r\n\r\n" + p + b"\r\n" for p in parts) + b"--b--\r\n"
        return requests.post(stack.url("/dicomweb/studies"), data=body, headers=headers, timeout=120)

    assert stow(payloads[:kept]).status_code == 200
    refused = stow(payloads[kept + 1 : kept + 3])
    assert refused.status_code == 413, refused.text
    assert (
        "storage quota" in refused.json()["00081198"]["Value"][0]["00091001"]["Value"][0]
    )  # the reason, as every STOW failure carries it

    status, comment = _store_status(stack, payloads[kept], QUOTA_AE)
    assert status == 0xA700 and "storage quota" in comment, comment
    with psycopg.connect(stack.settings.effective_postgres_dsn()) as conn:
        count = conn.execute("SELECT count(*) FROM instance WHERE tenant = 'quota'").fetchone()
    assert count == (kept,), "what it had is kept, nothing more was stored"
    metrics = requests.get(stack.url("/metrics"), headers=operator_headers(), timeout=30)
    assert metrics.status_code == 200 and 'dicomflow_stored_bytes{tenant="quota",tier="hot"}' in metrics.text
