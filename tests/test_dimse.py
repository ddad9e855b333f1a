"""DIMSE with real clients: dcmtk's echoscu and dcmsend send all of ../shared/data."""

from __future__ import annotations

import io
import os
import re
import subprocess
import tempfile
from pathlib import Path

import psycopg
import pytest
from pydicom import dcmread
from pydicom.filewriter import dcmwrite
from pydicom.uid import generate_uid
from pynetdicom import AE

from archive.dicom.uids import is_safe_uid
from contract.names import PROCESS_STUDY, STUDY_STEPS
from testkit.temporal_waits import activity_types, study_steps, wait_completed
from tests.conftest import STORE_AE, TENANT_B_AE, run

NODELAY = {**os.environ, "TCP_NODELAY": "1"}
COMPRESSED = {
    "1.2.840.10008.1.2.4.50": "JPEG baseline",
    "1.2.840.10008.1.2.4.70": "JPEG lossless SV1",
    "1.2.840.10008.1.2.4.80": "JPEG-LS lossless",
    "1.2.840.10008.1.2.4.90": "JPEG 2000 lossless",
    "1.2.840.10008.1.2.4.91": "JPEG 2000",
    "1.2.840.10008.1.2.5": "RLE lossless",
}


def index_rows(settings, sql: str, *params):
    with psycopg.connect(settings.effective_postgres_dsn()) as conn:
        return conn.execute(sql, params).fetchall()


def test_echoscu(stack):
    s = stack.settings
    result = subprocess.run(
        ["echoscu", "-aec", s.dimse.ae_title, "127.0.0.1", str(s.dimse.port)], capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0, result.stderr


@pytest.fixture(scope="module")
def sent_all(stack, data_dir, tmp_path_factory):
    """One dcmsend run of every file in shared/data, as a modality would."""
    report = tmp_path_factory.mktemp("dcmsend") / "report.txt"
    s = stack.settings
    result = subprocess.run(
        [
            "dcmsend",
            "-dn",
            "-nh",
            "--create-report-file",
            str(report),
            "-aet",
            "MODALITY",
            "-aec",
            s.dimse.ae_title,
            "127.0.0.1",
            str(s.dimse.port),
            "--scan-directories",
            "--recurse",
            str(data_dir),
        ],
        capture_output=True,
        text=True,
        env=NODELAY,
        timeout=900,
    )
    unsendable = set(re.findall(r"cannot send SOP instance from file: (.+?): ", result.stderr))
    entries = re.findall(r"Filename\s+: (.+?)\n.*?DIMSE Status\s+: (0x[0-9a-f]{4}|<[^>]+>)", report.read_text(), re.S)
    return {"unsendable": unsendable, "statuses": [s for _, s in entries], "by_file": dict(entries), "stderr": result.stderr}


def expected_sop_uids(data_dir: Path, unsendable: set[str]) -> set[str]:
    """What a correct archive keeps: each sendable file's SOP Instance UID, when its identity UIDs are
    conformant or harmless (uid_policy lenient, the default). The File Meta does not travel over
    DIMSE: bad_sequence.dcm's meta names another instance, dcmsend sends the dataset's."""
    expected = set()
    for path in data_dir.rglob("*"):
        if not path.is_file() or str(path) in unsendable or path.suffix in (".md", ".txt"):
            continue
        ds = dcmread(path, stop_before_pixels=True)
        uids = [str(ds.get(k, "") or "") for k in ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID")]
        if all(is_safe_uid(u) for u in uids):
            expected.add(uids[1])
    return expected


def test_real_file_with_hex_uids_is_kept_and_marked(stack, sent_all, data_dir):
    """pydicom-data's bad_sequence.dcm names its instance, study and series with 64 hex digits: kept
    under uid_policy lenient (a modality's queue would otherwise stall), its row says why."""
    path = next(data_dir.rglob("bad_sequence.dcm"))
    sop = str(dcmread(path, stop_before_pixels=True).SOPInstanceUID)
    rows = index_rows(stack.settings, "SELECT nonconformance FROM instance WHERE tenant = 'default' AND sop_uid = %s", sop)
    assert rows and "not a valid UID" in rows[0][0]


def test_every_sendable_file_is_stored(stack, sent_all, data_dir):
    stored = {r[0] for r in index_rows(stack.settings, "SELECT sop_uid FROM instance WHERE tenant = 'default'")}
    # dcmtk reads explicit_VR-UN.dcm's UN elements as raw bytes and names the object '1' in its
    # C-STORE request; the archive rightly answers A900 (dataset is not the object requested)
    misnamed = {f for f, status in sent_all["by_file"].items() if status == "0xa900"}
    assert {Path(f).name for f in misnamed} <= {"explicit_VR-UN.dcm"}
    expected = expected_sop_uids(data_dir, sent_all["unsendable"] | misnamed)
    assert len(expected) >= 990, "the shared data should give about 997 unique instances"
    assert stored == expected
    # refusals are explicit statuses, never a dropped association or an out-of-resources answer
    assert "<unknown status>" not in sent_all["statuses"] and "0xa700" not in sent_all["statuses"]
    assert "Peer aborted" not in sent_all["stderr"]


def test_every_compressed_syntax_is_accepted_as_sent(stack, sent_all):
    syntaxes = {
        r[0] for r in index_rows(stack.settings, "SELECT DISTINCT transfer_syntax FROM instance WHERE tenant = 'default'")
    }
    missing = {name for uid, name in COMPRESSED.items() if uid not in syntaxes}
    assert not missing, f"not stored in their own syntax: {missing}"


def test_every_study_workflow_completes_with_all_steps(stack, sent_all):
    from temporalio.client import WorkflowExecutionStatus

    studies = [r[0] for r in index_rows(stack.settings, "SELECT study_uid FROM study WHERE tenant = 'default'")]
    ids = [f"study:default:{uid}" for uid in studies]
    statuses = run(wait_completed(stack.settings, ids, timeout=300))
    assert all(s == WorkflowExecutionStatus.COMPLETED for s in statuses.values()), statuses
    for wid in ids:
        assert run(study_steps(stack.settings, wid)) == list(STUDY_STEPS), wid
        assert PROCESS_STUDY in run(activity_types(stack.settings, wid)), "one activity for the pass"
    rows = index_rows(stack.settings, "SELECT state, count(*) FROM instance WHERE tenant = 'default' GROUP BY state")
    assert dict(rows) == {"committed": sum(n for _, n in rows)}
    toshiba = index_rows(
        stack.settings,
        "SELECT num_instances, metadata_state FROM series WHERE tenant = 'default' ORDER BY num_instances DESC LIMIT 1",
    )
    assert toshiba == [(520, "ready")]


def test_study_histories_replay_in_the_sandbox(stack, sent_all):
    """The worker runs workflows unsandboxed for speed; Temporal's sandboxed Replayer re-runs the
    real histories here, so non-determinism or a forbidden call in workflow code still fails."""
    from temporalio.worker import Replayer

    from testkit.temporal_waits import client_for
    from workflows.study import StudyWorkflow

    studies = [
        r[0] for r in index_rows(stack.settings, "SELECT study_uid FROM study WHERE tenant = 'default' ORDER BY study_uid")
    ]
    ids = [f"study:default:{uid}" for uid in studies][:10]
    run(wait_completed(stack.settings, ids, timeout=300))

    async def replay() -> int:
        client = await client_for(stack.settings)
        histories = [await client.get_workflow_handle(wid).fetch_history() for wid in ids]
        replayer = Replayer(workflows=[StudyWorkflow])  # sandboxed by default
        for history in histories:
            await replayer.replay_workflow(history)  # raises on any mismatch
        return sum(len(h.events) for h in histories)

    assert run(replay()) >= 8 * len(ids)  # a settled one-instance study is 8 events; larger ones more


def test_a_one_instance_study_from_storescu_is_one_workflow_task(stack, data_dir, tmp_path):
    """The receiver signals a study once it is quiet (settled), so its workflow processes it at once
    as a local activity: no timer, no patch marker, one workflow task, 8 history events."""
    from temporalio.api.enums.v1 import EventType

    from testkit.temporal_waits import client_for

    payload, _sop = _restamped(data_dir, StudyInstanceUID=generate_uid())
    study = str(dcmread(io.BytesIO(payload), stop_before_pixels=True).StudyInstanceUID)
    (tmp_path / "one.dcm").write_bytes(payload)
    s = stack.settings
    sent = subprocess.run(
        ["storescu", "-aet", TENANT_B_AE, "-aec", s.dimse.ae_title, "127.0.0.1", str(s.dimse.port), str(tmp_path / "one.dcm")],
        capture_output=True,
        text=True,
        timeout=60,
        env=NODELAY,
    )
    assert sent.returncode == 0, sent.stderr
    workflow_id = f"study:tenantb:{study}"
    run(wait_completed(s, [workflow_id], timeout=120))

    async def history():
        return await (await client_for(s)).get_workflow_handle(workflow_id).fetch_history()

    events = run(history()).events
    kinds = [e.event_type for e in events]
    markers = [
        e.marker_recorded_event_attributes.marker_name for e in events if e.event_type == EventType.EVENT_TYPE_MARKER_RECORDED
    ]
    assert EventType.EVENT_TYPE_TIMER_STARTED not in kinds
    assert markers == ["core_local_activity"], markers
    assert kinds.count(EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED) == 1
    assert len(kinds) == 8, kinds
    assert index_rows(s, "SELECT state FROM study WHERE tenant = 'tenantb' AND study_uid = %s", study) == [("ready",)]


def _store(stack, payload, calling_ae=STORE_AE, called_ae=None):
    """Send one object with pynetdicom, streaming the file's dataset bytes as they are."""
    from pynetdicom import _config

    _config.STORE_SEND_CHUNKED_DATASET = True
    ae = AE(ae_title=calling_ae)
    ds = dcmread(io.BytesIO(payload), stop_before_pixels=True, force=True)
    ae.add_requested_context(ds.file_meta.MediaStorageSOPClassUID, ds.file_meta.TransferSyntaxUID)
    assoc = ae.associate("127.0.0.1", stack.settings.dimse.port, ae_title=called_ae or stack.settings.dimse.ae_title)
    assert assoc.is_established
    with tempfile.NamedTemporaryFile(suffix=".dcm") as fh:
        fh.write(payload)
        fh.flush()
        try:
            return assoc.send_c_store(Path(fh.name))  # sent from the file as it is, not re-encoded
        finally:
            assoc.release()


def _restamped(data_dir, **changes) -> tuple[bytes, str]:
    ds = dcmread(next((data_dir / "dcm_qa_nih").rglob("*.dcm")))
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    for key, value in changes.items():
        setattr(ds, key, value)
    out = io.BytesIO()
    dcmwrite(out, ds, enforce_file_format=True)
    return out.getvalue(), str(ds.SOPInstanceUID)


def test_calling_ae_entry_binds_the_tenant(stack, data_dir):
    payload, sop = _restamped(data_dir)
    assert _store(stack, payload, calling_ae=TENANT_B_AE).Status == 0
    assert index_rows(stack.settings, "SELECT tenant FROM instance WHERE sop_uid = %s", sop) == [("tenantb",)]


def test_truncated_object_gets_cannot_understand(stack, data_dir):
    payload, sop = _restamped(data_dir)
    status = _store(stack, payload[: len(payload) // 2], calling_ae=TENANT_B_AE)
    assert status.Status == 0xC000 and "truncated" in status.ErrorComment
    assert index_rows(stack.settings, "SELECT 1 FROM instance WHERE sop_uid = %s", sop) == []


def test_dataset_that_is_not_the_requested_object_gets_a900(stack, data_dir):
    payload, sop = _restamped(data_dir)
    # the File Meta (which the request's Affected SOP Instance UID is taken from) names another object
    other = sop[:-1] + ("1" if sop[-1] != "1" else "2")
    meta_end = 132 + 12 + int.from_bytes(payload[140:144], "little")
    misnamed = payload[:meta_end].replace(sop.encode(), other.encode()) + payload[meta_end:]
    status = _store(stack, misnamed, calling_ae=TENANT_B_AE)
    assert status.Status == 0xA900 and "differs" in status.ErrorComment
    assert index_rows(stack.settings, "SELECT 1 FROM instance WHERE sop_uid = %s", sop) == []


def test_changed_object_under_a_stored_uid_is_refused(stack, data_dir):
    payload, sop = _restamped(data_dir)
    assert _store(stack, payload, calling_ae=TENANT_B_AE).Status == 0
    query = "SELECT sha256 FROM instance WHERE tenant = 'tenantb' AND sop_uid = %s"
    stored = index_rows(stack.settings, query, sop)
    assert _store(stack, payload, calling_ae=TENANT_B_AE).Status == 0  # identical resend: success, no change
    changed = dcmread(io.BytesIO(payload))
    changed.PatientName = "Someone^Else"
    out = io.BytesIO()
    dcmwrite(out, changed, enforce_file_format=True)
    status = _store(stack, out.getvalue(), calling_ae=TENANT_B_AE)
    assert status.Status == 0xA901 and "different content" in status.ErrorComment  # PS3.4 B.2.3: A9xx, not 0111
    assert index_rows(stack.settings, query, sop) == stored


def test_scp_processes_share_the_port(stack):
    import psutil

    port = stack.settings.dimse.port
    listeners = {c.pid for c in psutil.net_connections("tcp") if c.status == psutil.CONN_LISTEN and c.laddr.port == port}
    assert len(listeners) == stack.settings.cluster.scp_processes == 2
    assert listeners <= {p.pid for p in stack.descendants()}
    for _ in range(6):  # the kernel spreads new associations over both; each must answer
        result = subprocess.run(
            ["echoscu", "-aec", stack.settings.dimse.ae_title, "127.0.0.1", str(port)], capture_output=True, text=True, timeout=30
        )
        assert result.returncode == 0, result.stderr
