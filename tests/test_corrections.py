"""Patient and study corrections (issue 29 item 2) with real clients: a bulk update sent with
`requests` in Microsoft's DICOM service shape, an HL7 ADT A40 merge sent by the hl7 library's own
`mllp_send`, each a workflow after which QIDO, C-FIND, WADO-RS, WADO-URI and C-MOVE show the new
values, the stored bytes were never overwritten, and the original values are in the log."""

from __future__ import annotations

import io
import time
from pathlib import Path

import psycopg
import pytest
import requests
from dicomweb_client.api import DICOMwebClient
from pydicom import dcmread
from pydicom.uid import generate_uid
from temporalio.client import WorkflowExecutionStatus

from contract import names
from testkit.temporal_waits import wait_completed
from tests.auth import auth_headers
from tests.conftest import STORESCP_AE, UPDATE_AE, run
from tests.test_query_retrieve import dcmtk, findscu, received, storescp

UPDATER = ("reader", "writer", "updater")


def _restamped(data_dir: Path, patient_id: str, name: str) -> list[bytes]:
    """The Siemens NIH study as a new study of patient `patient_id` (new Study, Series and SOP UIDs)."""
    files = sorted(p for p in (data_dir / "dcm_qa_nih").rglob("*") if p.is_file())
    study, series = generate_uid(), {}
    out = []
    for path in files:
        ds = dcmread(path)
        ds.StudyInstanceUID, ds.PatientID, ds.PatientName = study, patient_id, name
        ds.SeriesInstanceUID = series.setdefault(str(ds.SeriesInstanceUID), generate_uid())
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        buffer = io.BytesIO()
        ds.save_as(buffer, enforce_file_format=True)
        out.append(buffer.getvalue())
    return out


def _stow(stack, tenant: str, payloads: list[bytes]) -> str:
    body = b"".join(b"--b\r\nContent-Type: application/dicom\r\n\r\n" + p + b"\r\n" for p in payloads) + b"--b--\r\n"
    headers = {**auth_headers(tenant), "Content-Type": 'multipart/related; type="application/dicom"; boundary=b'}
    answer = requests.post(stack.url("/dicomweb/studies"), data=body, headers=headers, timeout=120)
    assert answer.status_code == 200, answer.text
    return str(dcmread(io.BytesIO(payloads[0]), stop_before_pixels=True).StudyInstanceUID)


def _processed(stack, tenant: str, *studies: str) -> None:
    ids = [names.study_workflow_id(tenant, s) for s in studies]
    time.sleep(stack.settings.stable_seconds + 1)
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
    study = _stow(stack, tenant, payloads)
    other = _stow(stack, tenant, _restamped(data_dir, "OLD-17", "Smith^Jon"))  # not named: keeps its values
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
            "movescu", "-S", "-aet", UPDATE_AE, "-aec", stack.settings.ae_title, "-aem", STORESCP_AE,
            "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={study}", "127.0.0.1", str(stack.settings.dimse_port),
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
