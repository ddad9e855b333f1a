"""Tiering (issue 30): a lifecycle rule with `action = "tier"` moves old studies to the cold store,
here an S3-compatible server the tests start (tests/conftest.py `cold_s3`). Real scanner files in
nine transfer syntaxes and a Siemens MR series go cold; afterwards WADO-RS, WADO-URI, C-GET and
C-MOVE give back the same bytes as before, QIDO is unchanged, the hot copies are gone, and
`dicomflow status` and `/metrics` count the bytes in each tier. A worker SIGKILLed in the middle
of a move loses nothing, and the re-run finishes it."""

from __future__ import annotations

import hashlib
import io
import subprocess
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import psycopg
import pytest
import requests
from minio import Minio
from pydicom import dcmread
from temporalio.client import WorkflowExecutionStatus

from archive.dicom.part10_meta import HEAD_BYTES, read_layout
from contract import names
from testkit.restamp import as_new_study
from testkit.s3_server import ACCESS_KEY, REGION, SECRET_KEY
from testkit.temporal_waits import wait_completed
from tests.auth import auth_headers, operator_headers
from tests.conftest import STORESCP_AE, TIER_AE, run
from tests.test_lifecycle import run_killing_workers
from tests.test_query_retrieve import dataset_bytes, dcmtk, received, storescp

TENANT = "tier"
LATER = timedelta(days=400)  # past the rules' after_days = 365


def _stow(stack, tenant: str, payloads: list[bytes]) -> str:
    body = b"".join(b"--b\r\nContent-Type: application/dicom\r\n\r\n" + p + b"\r\n" for p in payloads) + b"--b--\r\n"
    headers = {**auth_headers(tenant), "Content-Type": 'multipart/related; type="application/dicom"; boundary=b'}
    answer = requests.post(stack.url("/dicomweb/studies"), data=body, headers=headers, timeout=300)
    assert answer.status_code == 200, answer.text
    study = str(dcmread(io.BytesIO(payloads[0]), stop_before_pixels=True).StudyInstanceUID)
    time.sleep(stack.settings.ingest.stable_seconds + 1)
    wid = names.study_workflow_id(tenant, study)
    assert run(wait_completed(stack.settings, [wid], timeout=300)) == {wid: WorkflowExecutionStatus.COMPLETED}
    return study


def _rows(stack, tenant: str, study: str) -> dict[str, tuple[str, str, str, str]]:
    """sop -> (series, blob key, sha256, tier)"""
    with psycopg.connect(stack.settings.effective_postgres_dsn()) as conn:
        rows = conn.execute(
            "SELECT sop_uid, series_uid, blob_key, sha256, tier FROM instance WHERE tenant = %s AND study_uid = %s",
            (tenant, study),
        ).fetchall()
    return {sop: (series, key, sha, tier) for sop, series, key, sha, tier in rows}


def _cold_keys(stack) -> set[str]:
    s = stack.settings
    client = Minio(s.storage.cold_s3_endpoint, access_key=ACCESS_KEY, secret_key=SECRET_KEY, secure=False, region=REGION)
    return {o.object_name for o in client.list_objects(s.storage.cold_s3_bucket, recursive=True) if o.object_name}


def _wado_rs(stack, study: str, series: str, sop: str) -> bytes:
    answer = requests.get(
        stack.url(f"/dicomweb/studies/{study}/series/{series}/instances/{sop}"),
        headers={**auth_headers(TENANT), "Accept": 'multipart/related; type="application/dicom"; transfer-syntax=*'},
        timeout=60,
    )
    assert answer.status_code == 200, answer.text
    part = answer.content[answer.content.index(b"\r\n\r\n") + 4 :]
    return part[: part.rindex(b"\r\n--")]


def _wado_uri(stack, study: str, series: str, sop: str) -> bytes:
    params = {"requestType": "WADO", "studyUID": study, "seriesUID": series, "objectUID": sop, "contentType": "application/dicom"}
    answer = requests.get(stack.url("/dicomweb/wado"), params=params, headers=auth_headers(TENANT), timeout=60)
    assert answer.status_code == 200, answer.text
    return answer.content


def _getscu(stack, study: str, out: Path) -> subprocess.CompletedProcess:
    out.mkdir()
    s = stack.settings
    return dcmtk(
        "getscu", "-S", "+B", "-aet", TIER_AE, "-aec", s.dimse.ae_title, "-od", str(out),
        "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={study}", "127.0.0.1", str(s.dimse.port),
    )  # fmt: skip


def _tier(stack, *extra: str) -> str:
    as_of = (datetime.now(UTC) + LATER).isoformat()
    done = stack.cli("lifecycle", "run", "--as-of", as_of, *extra, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


@pytest.fixture(scope="module")
def tier_study(stack, data_dir) -> tuple[str, dict[str, bytes]]:
    files = (
        sorted(p for p in (data_dir / "dcm_qa_ts").rglob("*.dcm"))
        + sorted(p for p in (data_dir / "dcm_qa_nih").rglob("*") if p.is_file())[:12]
    )
    payloads = as_new_study(files)
    study = _stow(stack, TENANT, payloads)
    return study, {str(dcmread(io.BytesIO(p), stop_before_pixels=True).SOPInstanceUID): p for p in payloads}


def test_a_tiered_study_reads_back_byte_identical_over_every_path(stack, tier_study, storescp_port, tmp_path):
    study, originals = tier_study
    before = _rows(stack, TENANT, study)
    assert {tier for *_, tier in before.values()} == {"hot"} and len(before) == len(originals)
    web_before = {sop: _wado_rs(stack, study, series, sop) for sop, (series, *_) in before.items()}
    qido_before = requests.get(stack.url(f"/dicomweb/studies/{study}/instances"), headers=auth_headers(TENANT), timeout=60)
    assert qido_before.status_code == 200

    assert f"{study}: tier (tier-old)" in _tier(stack, "--dry-run")
    assert {tier for *_, tier in _rows(stack, TENANT, study).values()} == {"hot"}, "a dry run moves nothing"

    done = _tier(stack)
    assert f"{len(originals)} moved to the cold store" in done, done
    after = _rows(stack, TENANT, study)
    assert {sop: (series, key, sha) for sop, (series, key, sha, _) in after.items()} == {
        sop: (series, key, sha) for sop, (series, key, sha, _) in before.items()
    }, "the index names the same objects"
    assert {tier for *_, tier in after.values()} == {"cold"}
    hot = stack.settings.var_path / "blobs"
    assert not any((hot / key).exists() for _, key, _, _ in after.values()), "the hot copies are gone"
    assert {key for _, key, _, _ in after.values()} <= _cold_keys(stack)

    # every read path follows the data, byte for byte
    for sop, (series, _key, sha, _) in after.items():
        got = _wado_rs(stack, study, series, sop)
        assert got == web_before[sop] and hashlib.sha256(got).hexdigest() == sha, sop
    sop, (series, *_) = next(iter(after.items()))
    assert _wado_uri(stack, study, series, sop) == web_before[sop]
    qido = requests.get(stack.url(f"/dicomweb/studies/{study}/instances"), headers=auth_headers(TENANT), timeout=60)
    assert qido.json() == qido_before.json(), "QIDO is unaffected"
    got = _getscu(stack, study, tmp_path / "got")
    assert got.returncode == 0, got.stderr
    stored = {s: dataset_bytes_of(web_before[s]) for s in after}
    gotten = {str(ds.SOPInstanceUID): ds for ds in map(dcmread, (tmp_path / "got").iterdir())}
    assert set(gotten) == set(stored)
    for sop, ds in gotten.items():  # getscu takes what it proposes: a syntax it lacks comes converted
        assert np.array_equal(ds.pixel_array, _pixels(originals[sop])), sop
    with storescp(storescp_port, tmp_path / "moved", accept_all=True):
        moved = dcmtk(
            "movescu", "-S", "-aet", TIER_AE, "-aec", stack.settings.dimse.ae_title, "-aem", STORESCP_AE,
            "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={study}", "127.0.0.1", str(stack.settings.dimse.port),
        )  # fmt: skip
    assert moved.returncode == 0, moved.stderr
    assert set(received(tmp_path / "moved")) == set(originals)
    as_stored = 0
    for path in (p for p in (tmp_path / "moved").iterdir() if p.is_file()):
        sop, data = dataset_bytes(path)
        if _syntax(path.read_bytes()) == _syntax(web_before[sop]):  # storescp +xa may take implicit VR as explicit
            assert data == stored[sop], sop
            as_stored += 1
        else:
            assert np.array_equal(dcmread(path).pixel_array, _pixels(originals[sop])), sop
    assert as_stored >= len(stored) - 1, "a destination that accepts every syntax gets the objects as stored"

    assert "0 moved to the cold store" in _tier(stack), "nothing twice"
    status = stack.cli("status", timeout=120)
    assert f"storage: {TENANT} cold: {len(originals)} objects" in status.stdout, status.stdout
    metrics = requests.get(stack.url("/metrics"), headers=operator_headers(), timeout=30).text
    assert f'dicomflow_stored_bytes{{tenant="{TENANT}",tier="cold"}}' in metrics


def _syntax(part10: bytes) -> str:
    return str(dcmread(io.BytesIO(part10), stop_before_pixels=True).file_meta.TransferSyntaxUID)


def _pixels(part10: bytes) -> np.ndarray:
    return dcmread(io.BytesIO(part10)).pixel_array


def dataset_bytes_of(part10: bytes) -> bytes:
    """The data set after the File Meta: what a C-GET carries of a stored object."""
    layout = read_layout(part10[:HEAD_BYTES])
    assert layout is not None
    return part10[layout.dataset_offset :]


def test_a_move_survives_a_killed_worker_and_loses_nothing(stack, data_dir):
    """SIGKILL of every workflow worker while 520 real Toshiba MR objects move to the cold store:
    the run finishes on the restarted worker; every object is cold once, its hot copy gone, and
    its cold copy's checksum the one the index acknowledged at receipt."""
    files = sorted(p for p in (data_dir / "dcm_qa_toshiba").rglob("*") if p.is_file())
    tenant = "tier-kill"
    study = _stow(stack, tenant, [p.read_bytes() for p in files])
    before = _rows(stack, tenant, study)
    hot = stack.settings.var_path / "blobs"

    def sixty_moved() -> bool:
        return sum((hot / key).exists() for _, key, _, _ in before.values()) <= len(files) - 60

    run_killing_workers(stack, datetime.now(UTC) + LATER, sixty_moved)

    after = _rows(stack, tenant, study)
    assert set(after) == set(before) and {tier for *_, tier in after.values()} == {"cold"}
    assert not any((hot / key).exists() for _, key, _, _ in after.values())
    s = stack.settings
    client = Minio(s.storage.cold_s3_endpoint, access_key=ACCESS_KEY, secret_key=SECRET_KEY, secure=False, region=REGION)
    for _, key, sha, _ in after.values():
        response = client.get_object(s.storage.cold_s3_bucket, key)
        try:
            assert hashlib.sha256(response.read()).hexdigest() == sha, key
        finally:
            response.close()
            response.release_conn()
