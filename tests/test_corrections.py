"""Patient and study corrections (issue 29 item 2) with real clients: a bulk update sent with
`requests` in Microsoft's DICOM service shape, an HL7 ADT A40 merge sent by the hl7 library's own
`mllp_send`, each a workflow after which QIDO, C-FIND, WADO-RS, WADO-URI and C-MOVE show the new
values, the stored bytes were never overwritten, and the original values are in the log."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import time
from pathlib import Path

import hl7
import psycopg
import pytest
import requests
from dicomweb_client.api import DICOMwebClient
from pydicom import dcmread
from temporalio.client import WorkflowExecutionStatus

from contract import names
from testkit.replay import replay_all
from testkit.restamp import as_new_study
from testkit.temporal_waits import wait_completed
from tests.auth import auth_headers
from tests.conftest import HL7_FACILITY, PIR_AE, STORESCP_AE, UPDATE_AE, run
from tests.stowing import stow_study
from tests.test_query_retrieve import dcmtk, findscu, received, storescp
from workflows.update import UpdateWorkflow

UPDATER = ("reader", "writer", "updater")


def _restamped(data_dir: Path, patient_id: str, name: str) -> list[bytes]:
    """The Siemens NIH study as a new study of patient `patient_id` (new Study, Series and SOP UIDs)."""
    return as_new_study(
        sorted(p for p in (data_dir / "dcm_qa_nih").rglob("*") if p.is_file()), PatientID=patient_id, PatientName=name
    )


def _processed(stack, tenant: str, *studies: str) -> None:
    ids = [names.study_workflow_id(tenant, s) for s in studies]
    time.sleep(stack.settings.ingest.stable_seconds + 1)
    assert set(run(wait_completed(stack.settings, ids, timeout=240)).values()) == {WorkflowExecutionStatus.COMPLETED}


def _blob_keys(stack, tenant: str, study: str) -> dict[str, str]:
    with psycopg.connect(stack.settings.effective_postgres_dsn()) as conn:
        rows = conn.execute(
            "SELECT sop_uid, blob_key FROM instance WHERE tenant = %s AND study_uid = %s", (tenant, study)
        ).fetchall()
    return dict(rows)


def _operation(stack, tenant: str, href: str, timeout: float = 180) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        status = requests.get(href, headers=auth_headers(tenant, ["reader"]), timeout=30).json()
        if status["status"] != "running" or time.monotonic() > deadline:
            return status
        time.sleep(0.5)


def test_a_bulk_update_changes_every_read_path_and_keeps_the_originals(stack, data_dir, storescp_port, tmp_path):
    tenant = "upd"
    payloads = _restamped(data_dir, "OLD-17", "Smith^Jon")
    description = dcmread(io.BytesIO(payloads[0]), stop_before_pixels=True).get("StudyDescription")
    study = stow_study(stack, tenant, payloads)
    other = stow_study(stack, tenant, _restamped(data_dir, "OLD-17", "Smith^Jon"))  # not named: keeps its values
    _processed(stack, tenant, study, other)
    before = _blob_keys(stack, tenant, study)
    url = stack.url("/dicomweb/studies/$bulkUpdate")
    change = {
        "studyInstanceUids": [study],
        "changeDataset": {
            "00100010": {"vr": "PN", "Value": [{"Alphabetic": "Smith^John"}]},
            "00081030": {"vr": "LO", "Value": ["Brain EPI"]},
        },
    }
    assert requests.post(url, json=change, headers=auth_headers(tenant), timeout=30).status_code == 403  # writer alone
    bad = {**change, "changeDataset": {"00080060": {"vr": "CS", "Value": ["CT"]}}}
    refused = requests.post(url, json=bad, headers=auth_headers(tenant, UPDATER), timeout=30)
    assert refused.status_code == 400 and "cannot be changed" in refused.text
    bad_date = {**change, "changeDataset": {"00100030": {"vr": "DA", "Value": ["1990-01-01"]}}}
    assert requests.post(url, json=bad_date, headers=auth_headers(tenant, UPDATER), timeout=30).status_code == 400
    accepted = requests.post(url, json=change, headers=auth_headers(tenant, UPDATER), timeout=30)
    assert accepted.status_code == 202, accepted.text
    status = _operation(stack, tenant, accepted.json()["href"])
    assert status["status"] == "succeeded" and status["percentComplete"] == 100, status
    assert requests.get(accepted.json()["href"], headers=auth_headers("iocm", ["reader"]), timeout=30).status_code in (403, 404)
    _processed(stack, tenant, study)

    web = DICOMwebClient(url=stack.url("/dicomweb"), headers=auth_headers(tenant))
    [row] = web.search_for_studies(search_filters={"StudyInstanceUID": study}, fields=["StudyDescription"])
    assert row["00100010"]["Value"] == [{"Alphabetic": "Smith^John"}] and row["00081030"]["Value"] == ["Brain EPI"]
    assert len(web.search_for_studies(search_filters={"PatientName": "Smith^Jon"})) == 1  # only the other study
    instance = web.search_for_instances(study)[0]
    series, sop = instance["0020000E"]["Value"][0], instance["00080018"]["Value"][0]
    assert str(web.retrieve_instance(study, series, sop).PatientName) == "Smith^John"
    assert all(m["00100010"]["Value"] == [{"Alphabetic": "Smith^John"}] for m in web.retrieve_series_metadata(study, series))
    uri = requests.get(
        stack.url("/dicomweb/wado"),
        params={
            "requestType": "WADO",
            "studyUID": study,
            "seriesUID": series,
            "objectUID": sop,
            "contentType": "application/dicom",
        },
        headers=auth_headers(tenant),
        timeout=30,
    )
    assert uri.status_code == 200 and str(dcmread(io.BytesIO(uri.content)).StudyDescription) == "Brain EPI"
    found = findscu(stack, tmp_path / "f", "QueryRetrieveLevel=STUDY", f"StudyInstanceUID={study}", "PatientName", aet=UPDATE_AE)
    assert [str(d.PatientName) for d in found] == ["Smith^John"]
    with storescp(storescp_port, tmp_path / "moved", accept_all=True):
        moved = dcmtk(
            "movescu", "-S", "-aet", UPDATE_AE, "-aec", stack.settings.dimse.ae_title, "-aem", STORESCP_AE,
            "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={study}", "127.0.0.1", str(stack.settings.dimse.port),
        )  # fmt: skip
    assert moved.returncode == 0, moved.stderr
    assert {str(d.PatientName) for d in received(tmp_path / "moved").values()} == {"Smith^John"}

    after = _blob_keys(stack, tenant, study)
    assert set(after) == set(before) and not set(after.values()) & set(before.values()), "new versions, new keys"
    blobs = stack.settings.var_path / "blobs"
    assert not any((blobs / key).exists() for key in before.values()), "the superseded versions are gone"
    with psycopg.connect(stack.settings.effective_postgres_dsn()) as conn:
        [(original, changed)] = conn.execute(
            "SELECT original, changed FROM update_log WHERE tenant = %s AND study_uid = %s", (tenant, study)
        ).fetchall()
    assert original == {"PatientName": "Smith^Jon", "StudyDescription": description}  # recoverable for audit
    assert changed == {"PatientName": "Smith^John", "StudyDescription": "Brain EPI"}
    feed = requests.get(
        stack.url("/dicomweb/changefeed"), params={"limit": 100}, headers=auth_headers(tenant, ["reader"]), timeout=30
    )
    assert {c["SopInstanceUid"] for c in feed.json() if c["Action"] == "update"} == set(before)


@pytest.mark.parametrize("studies", [["not/a/uid"], []])
def test_a_bulk_update_naming_no_study_or_a_bad_uid_is_refused(stack, studies):
    change = {"studyInstanceUids": studies, "changeDataset": {"00100010": {"vr": "PN", "Value": [{"Alphabetic": "X"}]}}}
    answer = requests.post(
        stack.url("/dicomweb/studies/$bulkUpdate"), json=change, headers=auth_headers("upd", UPDATER), timeout=30
    )
    assert answer.status_code in (400, 422), answer.text


def test_a_bulk_update_body_past_its_bound_or_not_json_is_refused_before_parsing(stack):
    """A body over 1 MiB is refused with 413 whether it says its length or streams it chunked; a
    body that is not the operation's JSON gets 400 naming the field, as every malformed request; nothing is started either way."""
    from serve.bulk_update import MAX_BODY_BYTES

    url = stack.url("/dicomweb/studies/$bulkUpdate")
    headers = {**auth_headers("upd", UPDATER), "Content-Type": "application/json"}
    studies = ["1.2.826.0.1.3680043.8.498.1"]
    padded = json.dumps({"studyInstanceUids": studies, "changeDataset": {}, "pad": "x" * MAX_BODY_BYTES}).encode()
    declared = requests.post(url, data=padded, headers=headers, timeout=60)
    assert declared.status_code == 413 and "at most" in declared.json()["error"], declared.text
    streamed = requests.post(
        url, data=iter([padded[i : i + 65536] for i in range(0, len(padded), 65536)]), headers=headers, timeout=60
    )
    assert streamed.status_code == 413, streamed.text
    broken = requests.post(url, data=b'{"studyInstanceUids": "not a list"', headers=headers, timeout=30)
    assert broken.status_code == 400 and "json" in broken.json()["error"].lower(), broken.text
    unknown = requests.post(
        url, json={"studyInstanceUids": studies, "changeDataset": {}, "extra": 1}, headers=headers, timeout=30
    )
    assert unknown.status_code == 400 and "extra" in unknown.json()["error"], unknown.text


def _adt(event: str, control_id: str, pid: str, mrg: str | None = None, facility: str = HL7_FACILITY) -> str:
    structure = {"A40": "ADT_A39", "A47": "ADT_A30", "A08": "ADT_A01", "A31": "ADT_A05"}.get(event, "ADT_A01")
    segments = [
        f"MSH|^~\\&|PAS|{facility}|DICOMFLOW|RADIOLOGY|20261207110000||ADT^{event}^{structure}|{control_id}|P|2.5",
        f"EVN|{event}|20261207110000",
        pid,
        *([mrg] if mrg else []),
    ]
    return "\r".join(segments) + "\r"


def _mllp_send(stack, message: str, tmp_path: Path) -> str:
    """The hl7 library's own MLLP sender; what it prints is the ACK."""
    path = tmp_path / f"{abs(hash(message))}.hl7"
    path.write_bytes(b"\x0b" + message.encode() + b"\x1c\r")  # a file of MLLP blocks, as mllp_send reads them
    sent = subprocess.run(
        [str(Path(sys.executable).parent / "mllp_send"), "--file", str(path), "-p", str(stack.settings.hl7.port), "127.0.0.1"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert sent.returncode == 0, sent.stderr
    return sent.stdout


def _msa(ack: str) -> list[str]:
    [msa] = [segment for segment in ack.replace("\n", "\r").split("\r") if segment.startswith("MSA|")]
    return msa.split("|")


def _schedule(stack, tmp_path: Path, patient_id: str) -> str:
    """One of dcmtk's example worklist items, for `patient_id`, imported into tenant pir; its accession."""
    dump = sorted(Path("/usr/share/doc/dcmtk/examples/wlistdb/OFFIS").glob("*.dump"))[0]
    item = tmp_path / "item.wl"
    assert dcmtk("dump2dcm", "--write-xfer-little", str(dump), str(item)).returncode == 0
    ds = dcmread(item)
    ds.PatientID, ds.AccessionNumber = patient_id, f"ACC{abs(hash(tmp_path)) % 10**8}"
    (tmp_path / "item.json").write_text(json.dumps([ds.to_json_dict()]))
    imported = stack.cli("worklist", "import", str(tmp_path / "item.json"), "--tenant", "pir")
    assert imported.returncode == 0, imported.stdout + imported.stderr
    return str(ds.AccessionNumber)


def findscu_w(stack, out: Path, *keys: str) -> list:
    out.mkdir(exist_ok=True)
    s = stack.settings
    args = ["findscu", "-W", "-aet", PIR_AE, "-aec", s.dimse.ae_title, "-X", "-od", str(out)]
    for key in keys:
        args += ["-k", key]
    assert dcmtk(*args, "127.0.0.1", str(s.dimse.port)).returncode == 0
    return [dcmread(p) for p in sorted(out.glob("rsp*.dcm"))]


def _wait_update(stack, tenant: str, operation: str) -> None:
    wid = names.update_workflow_id(tenant, operation)
    assert run(wait_completed(stack.settings, [wid], timeout=600)) == {wid: WorkflowExecutionStatus.COMPLETED}


def test_an_hl7_a40_merge_moves_the_prior_patients_studies(stack, data_dir, tmp_path):
    tenant, web = "pir", DICOMwebClient(url=stack.url("/dicomweb"), headers=auth_headers("pir"))
    prior = [stow_study(stack, tenant, _restamped(data_dir, "PIR-OLD", "Doe^Jane")) for _ in range(2)]
    surviving = stow_study(stack, tenant, _restamped(data_dir, "PIR-NEW", "Doe^Jane^Q"))
    _processed(stack, tenant, *prior, surviving)
    scheduled = _schedule(stack, tmp_path, "PIR-OLD")
    merge = _adt("A40", "MSG-A40-1", "PID|||PIR-NEW^^^GENHOSP^MR||Doe^Jane^Q||19800102|F", "MRG|PIR-OLD^^^GENHOSP^MR")
    answer = _msa(_mllp_send(stack, merge, tmp_path))
    assert answer[1:3] == ["AA", "MSG-A40-1"], answer
    _wait_update(stack, tenant, f"hl7:{HL7_FACILITY}:MSG-A40-1")
    _processed(stack, tenant, *prior)

    assert web.search_for_studies(search_filters={"PatientID": "PIR-OLD"}) == []
    moved = {s["0020000D"]["Value"][0] for s in web.search_for_studies(search_filters={"PatientID": "PIR-NEW"})}
    assert moved == {*prior, surviving}
    instance = web.search_for_instances(prior[0])[0]
    retrieved = web.retrieve_instance(prior[0], instance["0020000E"]["Value"][0], instance["00080018"]["Value"][0])
    assert (str(retrieved.PatientID), str(retrieved.PatientName), str(retrieved.PatientBirthDate)) == (
        "PIR-NEW",
        "Doe^Jane^Q",
        "19800102",
    )

    worklist = {
        p: findscu_w(stack, tmp_path / p, f"PatientID={p}", "AccessionNumber", "PatientName") for p in ("PIR-OLD", "PIR-NEW")
    }
    assert worklist["PIR-OLD"] == [], "the worklist follows the merge"
    assert [(str(d.AccessionNumber), str(d.PatientID), str(d.PatientName)) for d in worklist["PIR-NEW"]] == [
        (scheduled, "PIR-NEW", "Doe^Jane^Q")
    ]

    again = _msa(_mllp_send(stack, merge, tmp_path))  # the same message again: acknowledged, applied once
    assert again[1] == "AA" and "applied once" in again[3], again
    with psycopg.connect(stack.settings.effective_postgres_dsn()) as conn:
        logged = conn.execute(
            "SELECT count(*) FROM update_log WHERE operation_id = %s", (f"hl7:{HL7_FACILITY}:MSG-A40-1",)
        ).fetchone()
        patients = conn.execute("SELECT patient_id FROM patient WHERE tenant = 'pir' ORDER BY 1").fetchall()
        audited = conn.execute(
            "SELECT count(*) FROM audit_event WHERE source = 'hl7' AND detail->>'control_id' = 'MSG-A40-1'"
        ).fetchone()
    assert logged == (2,) and patients == [("PIR-NEW",)]
    deadline = time.monotonic() + 10
    while audited[0] < 2 and time.monotonic() < deadline:  # the audit writer flushes twice a second
        time.sleep(0.5)
        with psycopg.connect(stack.settings.effective_postgres_dsn()) as conn:
            audited = conn.execute(
                "SELECT count(*) FROM audit_event WHERE source = 'hl7' AND detail->>'control_id' = 'MSG-A40-1'"
            ).fetchone()
    assert audited[0] == 2, "every message is audited, the repeat too"
    query = "WorkflowType = 'UpdateWorkflow' AND ExecutionStatus = 'Completed'"
    assert run(replay_all(stack.settings, query, [UpdateWorkflow])) >= 1


@pytest.mark.parametrize(
    ("message", "code", "reason"),
    [
        (_adt("A40", "X1", "PID|||A^^^H||N^M", "MRG|B", facility="NOBODY"), "AR", "unknown sending facility"),
        (_adt("A40", "X2", "PID|||A^^^H||N^M", "MRG|B", facility="FARHOSP"), "AR", "may not send from"),
        (_adt("A01", "X3", "PID|||A^^^H||N^M"), "AR", "unsupported message type"),
        (_adt("A40", "X4", "PID|||A^^^H||N^M"), "AE", "no MRG segment"),
        (_adt("A08", "X5", "PID|||A^^^H||N^M||1980-01-02"), "AE", "PatientBirthDate"),
        (_adt("A40", "X6", "PID|||ELSEWHERE-1||N^M", "MRG|PIR-X"), "AR", "another tenant"),
    ],
)
def test_hl7_messages_that_cannot_apply_are_refused_with_a_reason(stack, data_dir, tmp_path, message, code, reason):
    if "ELSEWHERE-1" in message:  # a patient that only another tenant holds
        stow_study(stack, "pir-elsewhere", _restamped(data_dir, "ELSEWHERE-1", "Else^Where"))
    answer = _msa(_mllp_send(stack, message, tmp_path))
    assert answer[1] == code and reason in answer[3], answer


def test_an_hl7_message_over_the_size_limit_is_dropped_and_the_listener_goes_on(stack, tmp_path):
    """A message past hl7_max_message_bytes (an A08 whose name field alone is 1.5 MiB) is never
    parsed or applied: its connection is closed without an ACK (there is nothing read whole to
    acknowledge) and the next sender is answered as usual."""
    import socket

    limit = stack.settings.hl7.max_message_bytes
    huge = _adt("A08", "HUGE-1", "PID|||PIR-HUGE^^^H||" + "N" * (limit + limit // 2) + "^M")
    with socket.create_connection(("127.0.0.1", stack.settings.hl7.port), timeout=30) as raw:
        try:  # the listener may close while the rest is still on its way
            raw.sendall(b"\x0b" + huge.encode() + b"\x1c\r")
            answered = raw.recv(4096)
        except (BrokenPipeError, ConnectionResetError):
            answered = b""
    assert answered == b"", "no ACK for a message the listener refused to read whole"
    with psycopg.connect(stack.settings.effective_postgres_dsn()) as conn:
        applied = conn.execute("SELECT count(*) FROM update_log WHERE operation_id LIKE %s", ("%HUGE-1",)).fetchone()
    assert applied == (0,)
    after = _msa(_mllp_send(stack, _adt("A01", "AFTER-HUGE", "PID|||A^^^H||N^M"), tmp_path))
    assert after[1] == "AR" and "unsupported message type" in after[3], "the listener still answers"


def test_a_merge_survives_a_killed_worker_and_loses_nothing(stack, data_dir, tmp_path):
    """SIGKILL of every workflow worker while an A47 (new identifier) rewrites 520 real Toshiba MR
    instances in four studies: the restarted worker finishes it; every instance is there once, with
    the new identifier, and each row names a blob that exists."""
    import os
    import signal

    from tests.test_query_retrieve import worker_pids

    files = sorted(p for p in (data_dir / "dcm_qa_toshiba").rglob("*") if p.is_file())
    tenant, studies = "pir", []
    for part in range(4):
        studies.append(stow_study(stack, tenant, as_new_study(files[part::4], PatientID="KILL-OLD", PatientName="Kill^Me")))
    _processed(stack, tenant, *studies)
    operation = f"hl7:{HL7_FACILITY}:MSG-A47-KILL"
    change = _adt("A47", "MSG-A47-KILL", "PID|||KILL-NEW^^^GENHOSP^MR||Kill^Me", "MRG|KILL-OLD^^^GENHOSP^MR")
    assert _msa(_mllp_send(stack, change, tmp_path))[1] == "AA"
    dsn = stack.settings.effective_postgres_dsn()
    deadline = time.monotonic() + 300
    while True:  # kill once the first study is switched and the others are not
        with psycopg.connect(dsn) as conn:
            done = conn.execute("SELECT count(*) FROM update_log WHERE operation_id = %s", (operation,)).fetchone()[0]
        if done >= 1 or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    before = worker_pids(stack)
    for pid in before:
        os.kill(pid, signal.SIGKILL)
    assert done < len(studies), "the workers died while the update was under way"
    _wait_update(stack, tenant, operation)
    assert set(worker_pids(stack)).isdisjoint(before), "Ray restarted the workers"

    web = DICOMwebClient(url=stack.url("/dicomweb"), headers=auth_headers(tenant))
    assert web.search_for_studies(search_filters={"PatientID": "KILL-OLD"}) == []
    found = web.search_for_studies(search_filters={"PatientID": "KILL-NEW"}, fields=["NumberOfStudyRelatedInstances"])
    assert {s["0020000D"]["Value"][0] for s in found} == set(studies)
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            "SELECT blob_key FROM instance WHERE tenant = %s AND study_uid = ANY(%s)", (tenant, studies)
        ).fetchall()
        logged = conn.execute("SELECT count(*) FROM update_log WHERE operation_id = %s", (operation,)).fetchone()
    assert len(rows) == len(files) and logged == (len(studies),), "every instance once, every study switched once"
    blobs = stack.settings.var_path / "blobs"
    assert all((blobs / key).exists() for (key,) in rows), "every row names a blob that is there"
    for (key,) in rows[:: len(rows) // 20]:
        assert str(dcmread(blobs / key, stop_before_pixels=True).PatientID) == "KILL-NEW"


def test_mllp_over_tls_takes_a_sender_with_a_certificate_and_no_one_else(stack, pki, tmp_path):
    """The listener with hl7_tls (run here beside the stack, on its index and Temporal): an A08 over
    TLS with the modality's client certificate is acknowledged; without a certificate the handshake
    fails and nothing is read."""
    import asyncio
    import ssl

    from hl7.mllp import open_hl7_connection

    from actors.hl7_listener import Hl7Listener
    from archive.config.tls import ssl_client_context
    from testkit.running_stack import free_port

    settings = stack.settings.with_values(hl7_tls=True, hl7_port=free_port())
    listener = Hl7Listener(settings)

    async def send(context: ssl.SSLContext) -> str:
        reader, writer = await open_hl7_connection("127.0.0.1", settings.hl7.port, ssl=context)
        try:
            writer.writemessage(hl7.parse(_adt("A08", "MSG-TLS-1", "PID|||TLS-1||Secure^Sam|||M")))
            await writer.drain()
            return str(await asyncio.wait_for(reader.readmessage(), 30))
        finally:
            writer.close()

    try:
        assert _msa(run(send(ssl_client_context(pki["ca"], pki["client"], pki["client_key"]))))[1] == "AA"
        with pytest.raises((ssl.SSLError, ConnectionError, asyncio.IncompleteReadError)):
            run(send(ssl_client_context(pki["ca"])))
    finally:
        listener.stop()
