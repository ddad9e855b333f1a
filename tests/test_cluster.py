"""Two Ray nodes on this machine, as a cluster admin runs them: the head from `dicomflow up`, a second
node from `dicomflow join` on its own loopback address (127.0.0.2), blobs in S3 (a local
S3-compatible server) as a cluster keeps them. The controller gives the new node an SCP that a
modality (dcmtk's storescu) reaches at the node's address, `dicomflow scale` spreads workflow
workers over both and changes the DICOMweb replicas, and `dicomflow leave` drains the node."""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import httpx
import psutil
import psycopg
import pytest
from dicomweb_client.api import DICOMwebClient
from pydicom import dcmread
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from pynetdicom import AE
from temporalio.client import WorkflowExecutionStatus

from archive.blobstore import open_blob_store
from serve.health import ray_auth_headers
from testkit.running_stack import DICOMFLOW, RunningStack, stack_overrides
from testkit.s3_server import moto_s3, stack_s3_settings
from testkit.temporal_waits import wait_completed
from tests.auth import bearer, stack_auth_settings
from tests.conftest import run

NODE_IP = "127.0.0.2"
MODALITY = "CLUSTERMOD"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory) -> Iterator[RunningStack]:
    var = tmp_path_factory.mktemp("cluster") / "var"
    with moto_s3() as endpoint:
        overrides = stack_overrides(
            var,
            **stack_auth_settings(),
            **stack_s3_settings(endpoint),
            ae_table={MODALITY: {"tenant": "cluster", "services": ["store"]}},
        )
        running = RunningStack(overrides, var.parent / "up.log")
        running.start()
        yield running
        running.stop()


def _join(stack: RunningStack, folder: Path) -> tuple[subprocess.Popen, IO[bytes]]:
    address = (stack.settings.var_path / "run" / "ray_address").read_text().strip()
    log = open(folder / "join.log", "ab")  # noqa: SIM115 - open while the node runs
    joined = subprocess.Popen(
        [DICOMFLOW, "join", address, "--node-ip", NODE_IP, "--roles", "dimse,worker", "--num-cpus", "1"],
        env=stack.env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    return joined, log


def _status(stack: RunningStack) -> dict:
    result = stack.cli("status", "--json", timeout=120)
    return json.loads(result.stdout)["cluster"]


def _wait_for(stack: RunningStack, predicate, timeout: float = 120) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        report = _status(stack)
        if "nodes" in report and predicate(report):
            return report
        assert time.monotonic() < deadline, f"cluster never reached the state: {report}"
        time.sleep(2)


def _node(report: dict, address: str) -> dict | None:
    return next((n for n in report["nodes"] if n["address"] == address), None)


def _storescu(stack: RunningStack, host: str, files: list[Path]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [
            "storescu",
            "-aet",
            MODALITY,
            "-aec",
            stack.settings.dimse.ae_title,
            host,
            str(stack.settings.dimse.port),
            *map(str, files),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )


def _stored_in(stack: RunningStack, tenant: str) -> int:
    with psycopg.connect(stack.settings.effective_postgres_dsn()) as conn:
        return conn.execute("SELECT count(*) FROM instance WHERE tenant = %s", (tenant,)).fetchone()[0]


def test_a_joined_node_gets_an_scp_scales_and_leaves(cluster, data_dir, tmp_path):
    head = _wait_for(cluster, lambda r: len(r["nodes"]) == 1)
    assert head["nodes"][0]["head"] and head["nodes"][0]["scp_actors"] == 1 and head["nodes"][0]["worker_actors"] == 1
    joined, log = _join(cluster, tmp_path)
    try:
        report = _wait_for(cluster, lambda r: (_node(r, NODE_IP) or {}).get("scp_ready") == 1, timeout=180)
        assert not _node(report, NODE_IP)["head"] and _node(report, NODE_IP)["roles"] == ["dimse", "worker"]

        files = sorted((data_dir / "dcm_qa_nih").rglob("*.dcm"))[:2]
        sent = _storescu(cluster, NODE_IP, files)  # the new node's own SCP, on its own address
        assert sent.returncode == 0, sent.stdout + sent.stderr
        assert _stored_in(cluster, "cluster") == len(files)

        scaled = cluster.cli("scale", "workers=2", timeout=300)
        assert scaled.returncode == 0, scaled.stdout + scaled.stderr
        report = _wait_for(cluster, lambda r: sum(n["workers_ready"] for n in r["nodes"]) == 2)
        assert all(n["worker_actors"] == 1 for n in report["nodes"]), "spread over both worker nodes"

        left = cluster.cli("leave", "--node-ip", NODE_IP, timeout=300)
        assert left.returncode == 0, left.stdout + left.stderr
        joined.wait(timeout=120)  # `leave` stopped the node: its `join` returns
        report = _wait_for(cluster, lambda r: _node(r, NODE_IP) is None, timeout=180)
        assert sum(n["worker_actors"] for n in report["nodes"]) == 2, "the drained node's worker moved to the head"
        refused = _storescu(cluster, NODE_IP, files[:1])
        assert refused.returncode != 0, "nothing listens on a node that left"
        again = _storescu(cluster, "127.0.0.1", files[:1])
        assert again.returncode == 0, again.stdout + again.stderr
    finally:
        if joined.poll() is None:
            joined.terminate()
            joined.wait(timeout=60)
        log.close()


def test_scale_refuses_a_count_it_does_not_own(cluster):
    for wrong in ("scp=3", "web=0", "web=4..2", "replicas=2"):
        result = cluster.cli("scale", wrong, timeout=60)
        assert result.returncode == 2 and "web=MIN..MAX" in result.stderr, (wrong, result.stderr)


def _web(report: dict) -> tuple[int, int | None, int]:
    return report["web"]["min"], report["web"]["max"], report["web"]["replicas"].get("RUNNING", 0)


def _serve_deployment(stack: RunningStack) -> dict:
    """The DICOMweb deployment as Ray Serve's REST API (on the head's dashboard) describes it."""
    answer = httpx.get(
        f"http://127.0.0.1:{stack.settings.cluster.ray_dashboard_port}/api/serve/applications/",
        headers=ray_auth_headers(),
        timeout=30,
    )
    answer.raise_for_status()
    return answer.json()["applications"]["dicomweb"]["deployments"]["dicomweb"]


def test_scale_web_changes_dicomweb_replicas_live(cluster):
    """A fixed count, then autoscaling bounds: Serve runs what `scale web=` asked for, on web nodes,
    and a DICOMweb client is answered throughout."""
    client = DICOMwebClient(cluster.url("/dicomweb"), headers=bearer("cluster"))
    answered: list[str] = []
    stop = threading.Event()

    def ask() -> None:
        while not stop.is_set():
            try:
                client.search_for_studies(limit=1)
                answered.append("ok")
            except Exception as err:  # noqa: BLE001 - counted, and the test fails on it
                answered.append(f"{type(err).__name__}: {err}")
            time.sleep(0.1)

    asking = threading.Thread(target=ask, daemon=True)
    asking.start()
    try:
        scaled = cluster.cli("scale", "web=2", timeout=600)
        assert scaled.returncode == 0, scaled.stdout + scaled.stderr
        report = _wait_for(cluster, lambda r: _web(r) == (2, None, 2) and r["web"]["status"] == "HEALTHY", timeout=300)
        assert sum(n["web_replicas"] for n in report["nodes"]) == 2
        assert _serve_deployment(cluster)["deployment_config"]["num_replicas"] == 2
        assert "DICOMweb replicas 2:" in cluster.cli("status", timeout=120).stdout

        autoscaled = cluster.cli("scale", "web=1..3", timeout=600)
        assert autoscaled.returncode == 0, autoscaled.stdout + autoscaled.stderr
        report = _wait_for(cluster, lambda r: _web(r)[:2] == (1, 3) and r["web"]["status"] == "HEALTHY", timeout=300)
        assert 1 <= _web(report)[2] <= 3
        deployed = _serve_deployment(cluster)["deployment_config"]  # what Serve itself was given
        assert deployed["autoscaling_config"]["min_replicas"] == 1 and deployed["autoscaling_config"]["max_replicas"] == 3
    finally:
        stop.set()
        asking.join(timeout=30)
    assert answered.count("ok") >= 10 and set(answered) == {"ok"}, f"DICOMweb answers while scaling: {sorted(set(answered))[:5]}"


def test_status_shows_the_backlog(cluster):
    """Once the cluster is quiet, `status` reports the index's own counts: the same numbers a direct
    query gives, and an empty outbox (the earlier tests' instances all signalled)."""
    from archive.index.backlog import BACKLOG_KEYS, BACKLOG_SQL

    def index_counts() -> dict[str, int]:
        with psycopg.connect(cluster.settings.effective_postgres_dsn()) as conn:
            return dict(zip(BACKLOG_KEYS, conn.execute(BACKLOG_SQL).fetchone()))

    deadline = time.monotonic() + 120
    while (quiet := index_counts())["outbox_unsignalled"] or quiet["instances_unprocessed"]:
        assert time.monotonic() < deadline, f"the cluster never went quiet: {quiet}"
        time.sleep(1)
    report = json.loads(cluster.cli("status", "--json", timeout=120).stdout)["backlog"]
    assert not [k for k in report if k.endswith("_error")], report
    assert report["study_workflows_failed"] == 0
    settled = ("outbox_unsignalled", "instances_unprocessed", "instances_failed")  # what cannot change once quiet
    assert {k: report[k] for k in settled} == {k: index_counts()[k] for k in settled}
    assert report["outbox_unsignalled"] == 0 and report["instances_unprocessed"] == 0
    assert set(BACKLOG_KEYS) <= set(report), f"status leaves out {set(BACKLOG_KEYS) - set(report)}"
    assert "storage commitment" in cluster.cli("status", timeout=120).stdout


def _send_until_stopped(
    stack: RunningStack, template, studies: dict[str, str], acked: list[tuple[str, str]], total: int, ended: list[str]
) -> None:
    """One association to the joined node's SCP; every Success is an acknowledged instance."""
    ae = AE(ae_title=MODALITY)
    ae.add_requested_context(template.SOPClassUID, ExplicitVRLittleEndian)
    assoc = ae.associate(NODE_IP, stack.settings.dimse.port, ae_title=stack.settings.dimse.ae_title)
    if not assoc.is_established:
        ended.append("association refused")
        return
    for number in range(total):
        ds = copy.deepcopy(template)
        ds.StudyInstanceUID, ds.SeriesInstanceUID = list(studies.items())[number % len(studies)]
        ds.SOPInstanceUID = generate_uid()
        ds.InstanceNumber = number + 1
        try:
            status = assoc.send_c_store(ds)
        except Exception as err:  # noqa: BLE001 - the node died under it
            ended.append(f"{type(err).__name__}: {err}")
            break
        if not assoc.is_established or not status or "Status" not in status:
            ended.append("association lost")
            break
        if status.Status == 0:
            acked.append((ds.StudyInstanceUID, ds.SOPInstanceUID))
        else:
            ended.append(f"status 0x{status.Status:04X}")
    if assoc.is_established:
        assoc.abort()


def test_a_node_killed_mid_ingest_loses_no_acknowledged_instance(cluster, data_dir, tmp_path):
    """SIGKILL of every process of a joined node while a modality streams to its SCP: each instance
    it acknowledged is in the index with its bytes, and every study's workflow completes on the head."""
    joined, log = _join(cluster, tmp_path)
    try:
        _wait_for(cluster, lambda r: (_node(r, NODE_IP) or {}).get("scp_ready") == 1, timeout=180)
        template = dcmread(sorted((data_dir / "dcm_qa_nih").rglob("*.dcm"))[0])
        template.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        studies = {generate_uid(): generate_uid() for _ in range(4)}  # study -> its one series
        acked: list[tuple[str, str]] = []
        ended: list[str] = []
        sender = threading.Thread(target=_send_until_stopped, args=(cluster, template, studies, acked, 1000, ended), daemon=True)
        sender.start()
        deadline = time.monotonic() + 180
        while len(acked) < 120:
            assert sender.is_alive() and time.monotonic() < deadline, f"only {len(acked)} instances acknowledged: {ended[-3:]}"
            time.sleep(0.05)
        node = psutil.Process(joined.pid)
        for process in [*node.children(recursive=True), node]:
            with contextlib.suppress(psutil.NoSuchProcess):
                process.send_signal(signal.SIGKILL)
        sender.join(timeout=120)
        assert 120 <= len(acked) < 1000, "the node died mid-ingest"
    finally:
        if joined.poll() is None:
            joined.kill()
        joined.wait(timeout=60)
        log.close()
    with psycopg.connect(cluster.settings.effective_postgres_dsn()) as conn:
        rows = dict(
            conn.execute(
                "SELECT sop_uid, blob_key || ' ' || sha256 FROM instance WHERE tenant = 'cluster' AND sop_uid = ANY(%s)",
                ([sop for _, sop in acked],),
            ).fetchall()
        )
    assert len(rows) == len(acked), f"{len(acked) - len(rows)} acknowledged instances are not in the index"
    blobs = open_blob_store(cluster.settings.storage, cluster.settings.var_path)
    assert not list((cluster.settings.var_path / "blobs").rglob("*.dcm")), "a cluster keeps its blobs in S3"
    for sop, entry in rows.items():
        key, digest = entry.split(" ")
        assert hashlib.sha256(b"".join(blobs.iter_chunks(key))).hexdigest() == digest, (
            f"{sop}: bytes differ from what was acknowledged"
        )
    ids = [f"study:cluster:{study}" for study in sorted({study for study, _ in acked})]
    finished = run(wait_completed(cluster.settings, ids, timeout=420))
    assert all(status == WorkflowExecutionStatus.COMPLETED for status in finished.values()), finished
    _wait_for(cluster, lambda r: _node(r, NODE_IP) is None, timeout=180)
