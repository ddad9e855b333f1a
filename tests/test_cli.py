"""`dicomflow up`, `status` and `down` end to end, in subprocesses, as an operator runs them."""

from __future__ import annotations

import concurrent.futures
import json
import os
import socket
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pytest
import requests
from pydicom import dcmread
from temporalio.client import WorkflowExecutionStatus

from cluster.serve_ingress import haproxy_dir
from cluster.services.process import read_pid
from testkit.running_stack import REPO, RunningStack, processes_using, stack_overrides
from testkit.temporal_waits import wait_completed
from tests.auth import admin_headers, bearer, operator_headers
from tests.conftest import run
from tests.test_dimse import _store

SERVICES = {"postgres", "redis", "temporal", "temporal_ui", "ray_dashboard", "dimse", "blobs", "dicomweb"}


def test_status_reports_every_service(stack):
    text = stack.cli("status")
    assert text.returncode == 0, text.stdout + text.stderr
    for name in SERVICES:
        assert name in text.stdout
    assert "serves C-ECHO, C-STORE, Storage Commitment, C-FIND, C-MOVE, C-GET, Modality Worklist, MPPS" in text.stdout
    report = json.loads(stack.cli("status", "--json").stdout)
    assert report["status"] == "ok" and set(report["services"]) == SERVICES
    assert report["services"]["postgres"]["version"].startswith("PostgreSQL")
    assert report["services"]["temporal"]["version"].startswith("Temporal server")


def test_health_endpoint_matches_status(stack):
    response = requests.get(stack.url("/health"), headers=admin_headers(), timeout=30)
    assert response.status_code == 200
    report = response.json()
    assert report["status"] == "ok" and set(report["services"]) == SERVICES


def test_health_details_are_for_admins_only(stack):
    for headers in ({}, bearer("default", ["reader", "writer", "deleter"])):
        response = requests.get(stack.url("/health"), headers=headers, timeout=30)
        assert response.status_code == 200 and response.json() == {"status": "ok"}


def test_a_flood_of_unauthenticated_health_checks_is_answered_from_shared_checks(stack):
    """Each check opens a connection to every service; callers at the same moment share one
    (serve/shared_result.py, whose unit test counts the checks), so 48 callers all get the answer."""
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(lambda _: requests.get(stack.url("/health"), timeout=60), range(48)))
    assert [(a.status_code, a.json()) for a in answers] == [(200, {"status": "ok"})] * 48
    report = requests.get(stack.url("/health"), headers=admin_headers(), timeout=30).json()
    checked = datetime.fromisoformat(report["checked_at"])
    assert abs((datetime.now(UTC) - checked).total_seconds()) < 60, "the admin's report says when it was checked"


def test_temporal_ui_and_ray_dashboard_answer(stack):
    ui = requests.get(f"http://127.0.0.1:{stack.settings.temporal.ui_port}/", timeout=10)
    assert ui.status_code == 200 and "<html" in ui.text.lower()
    dashboard = requests.get(f"http://127.0.0.1:{stack.settings.cluster.ray_dashboard_port}/", timeout=10)
    assert dashboard.status_code in (200, 401)  # the page, or its token prompt


def _haproxy_servers(settings) -> dict[str, dict[str, str]]:
    """HAProxy's live stats (CSV): its backend servers (Serve replicas), by proxy/server name."""
    text = requests.get(f"http://127.0.0.1:{settings.web.haproxy_stats_port}/stats;csv", timeout=10).text
    header, *lines = text.lstrip("# ").splitlines()
    rows = [dict(zip(header.split(","), line.split(","))) for line in lines if line]
    return {f"{r['pxname']}/{r['svname']}": r for r in rows if r["svname"] not in ("FRONTEND", "BACKEND")}


def test_http_reaches_the_replicas_through_haproxy(stack):
    before = _haproxy_servers(stack.settings)
    replicas = {name: row for name, row in before.items() if row["status"] == "UP" and "fallback" not in name.lower()}
    assert replicas, f"no live replica behind HAProxy: {before}"
    for _ in range(5):
        assert requests.get(stack.url("/health"), timeout=30).status_code == 200
    after = _haproxy_servers(stack.settings)
    served = sum(int(after[name]["stot"]) - int(row["stot"]) for name, row in replicas.items())
    assert served >= 5, "the requests did not go through HAProxy to a replica"


def test_status_exits_nonzero_when_a_service_is_down(tmp_path):
    idle = RunningStack(stack_overrides(tmp_path / "var"), tmp_path / "up.log")
    result = idle.cli("status")
    assert result.returncode == 1 and "DOWN" in result.stdout


@pytest.mark.parametrize("setting", ["http_port", "postgres_port"])
def test_taken_port_is_named(tmp_path, setting):
    blocker = socket.socket()
    blocker.bind(("127.0.0.1", 0))
    blocker.listen()
    try:
        overrides = stack_overrides(tmp_path / "var", **{setting: blocker.getsockname()[1]})
        stack = RunningStack(overrides, tmp_path / "up.log")
        result = stack.cli("up", timeout=120)
    finally:
        blocker.close()
    assert result.returncode == 1
    assert f"DICOMFLOW_{setting.upper()}" in result.stderr and "already in use" in result.stderr
    assert not processes_using(tmp_path / "var")


def test_bad_setting_stops_startup_naming_the_key(tmp_path):
    stack = RunningStack(stack_overrides(tmp_path / "var"), tmp_path / "up.log")
    env = {**stack.env, "DICOMFLOW_STABLE_SECONDS": "soon"}
    import subprocess

    from testkit.running_stack import DICOMFLOW

    result = subprocess.run([DICOMFLOW, "up"], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "stable_seconds" in result.stderr and "DICOMFLOW_STABLE_SECONDS" in result.stderr


def test_restart_keeps_everything_and_down_leaves_nothing(tmp_path, data_dir):
    """Stop and start again: the index, the blobs and Temporal's history are all kept. The second
    start is `up --detach`: it returns once ready and the archive runs on in its own session."""
    var = tmp_path / "var"
    stack = RunningStack(stack_overrides(var), tmp_path / "up.log")
    path = next((data_dir / "dcm_qa_nih").rglob("*.dcm"))
    ds = dcmread(path, stop_before_pixels=True)
    wid = f"study:default:{ds.StudyInstanceUID}"
    stack.start()
    try:
        assert _store(stack, path.read_bytes()).Status == 0
        assert run(wait_completed(stack.settings, [wid], timeout=120))[wid] == WorkflowExecutionStatus.COMPLETED
    finally:
        down = stack.stop()
    assert down.returncode == 0
    assert not processes_using(var), "dicomflow down left processes running"
    assert not processes_using(Path(haproxy_dir(stack.settings))), "HAProxy outlived dicomflow down"

    detached = stack.cli("up", "--detach", timeout=300)
    try:
        assert detached.returncode == 0 and "`dicomflow down` stops it" in detached.stdout, detached.stdout + detached.stderr
        daemon = read_pid(var / "run" / "dicomflow.pid")
        assert daemon and os.getsid(daemon) != os.getsid(0), (
            "up --detach runs in a session of its own (no SIGHUP from this shell)"
        )
        with psycopg.connect(stack.settings.effective_postgres_dsn()) as conn:
            rows = conn.execute("SELECT sop_uid, state FROM instance").fetchall()
        assert rows == [(str(ds.SOPInstanceUID), "committed")]
        # Temporal's SQLite file kept the finished workflow too
        assert run(wait_completed(stack.settings, [wid], timeout=30))[wid] == WorkflowExecutionStatus.COMPLETED
        assert stack.cli("status", timeout=120).returncode == 0
    finally:
        assert stack.cli("down", timeout=180).returncode == 0
    assert not processes_using(var)


def test_metrics_for_operators_without_patient_data(stack, data_dir):
    """Prometheus text from the index: counts by tenant, protocol and state; the request timings of
    the replica that answered. An admin token is needed; nothing names a patient."""
    import re
    import time

    from tests.auth import bearer
    from tests.test_dimse import _store

    first = sorted((data_dir / "dcm_qa_nih").rglob("*.dcm"))[0]
    assert _store(stack, first.read_bytes()).Status == 0  # at least one instance, received over DIMSE
    assert requests.get(stack.url("/metrics"), timeout=30).status_code == 401
    assert requests.get(stack.url("/metrics"), headers=bearer("default", ["reader"]), timeout=30).status_code == 403
    # metrics count every tenant's objects: a tenant's admin is not enough (issue 27 item 6)
    assert requests.get(stack.url("/metrics"), headers=admin_headers(), timeout=30).status_code == 403
    requests.get(stack.url("/dicomweb/studies"), headers=bearer("default", ["reader"]), timeout=30)
    response = requests.get(stack.url("/metrics"), headers=operator_headers(), timeout=30)
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    text = response.text
    counts = [float(v) for v in re.findall(r'^dicomflow_instances\{[^}]*protocol="dimse"[^}]*\} (\S+)$', text, re.M)]
    assert counts and sum(counts) > 0, text[:2000]
    assert "dicomflow_outbox_unsignalled_instances" in text and "dicomflow_studies{" in text
    assert 'dicomflow_http_request_seconds_count{method="GET",route="/dicomweb/studies",status="2xx"}' in text
    # the SCP actors' receipt times, published through Redis (the SCP that took the C-STORE above)
    deadline = time.monotonic() + 30
    published = (
        r'^dicomflow_dimse_receipt_seconds_count\{scp="127\.0\.0\.1:\d+/\d+"\} [1-9]',
        r'^dicomflow_dimse_receipts_total\{outcome="stored",scp="127\.0\.0\.1:\d+/\d+"\} [1-9]',
    )
    while not all(re.search(pattern, text, re.M) for pattern in published):
        assert time.monotonic() < deadline, f"no SCP published its receipt times and outcomes: {text[-3000:]}"
        time.sleep(1)
        text = requests.get(stack.url("/metrics"), headers=operator_headers(), timeout=30).text
    assert "# TYPE dicomflow_stow_receipts_total counter" in text  # per replica, by outcome
    assert re.search(r"^dicomflow_audit_lost_events_total 0\.0$", text, re.M), "the audit trail lost nothing"
    for marker in ("Test^Regression", "stc_test", "FA191122"):  # patient names and IDs of the stored data
        assert marker not in text
    # the Grafana dashboard in docs/ graphs only metrics that exist
    import json

    dashboard = json.loads((REPO / "docs" / "grafana-dashboard.json").read_text())
    used = {m for panel in dashboard["panels"] for t in panel["targets"] for m in re.findall(r"dicomflow_\w+", t["expr"])}
    exported = set(re.findall(r"^# TYPE (dicomflow_\w+)", text, re.M))
    assert {m.removesuffix("_bucket").removesuffix("_count") for m in used} <= exported
