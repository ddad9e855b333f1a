"""UPS-RS over HTTP with a token, as a RIS or a script schedules work; the modality then sees the
scheduled step through `findscu -W` (Modality Worklist)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import requests
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from tests.auth import bearer
from tests.conftest import UPS_AE

TENANT = "ups"  # its own tenant: these workitems are worklist items, the worklist tests must not see them
JSON = "application/dicom+json"


def workitem(accession: str, label: str = "CT chest", start: str = "20261123093000") -> Dataset:
    ds = Dataset()
    ds.PatientName, ds.PatientID = "Doe^Jane", f"PID-{accession}"
    ds.ProcedureStepLabel = label
    ds.WorklistLabel = "CT"
    ds.ScheduledProcedureStepPriority = "MEDIUM"
    ds.ScheduledProcedureStepStartDateTime = start
    ds.InputReadinessState = "READY"
    request = Dataset()
    request.AccessionNumber, request.StudyInstanceUID, request.RequestedProcedureID = accession, generate_uid(), "RP1"
    ds.ReferencedRequestSequence = [request]
    station, kind = Dataset(), Dataset()
    station.CodeValue, station.CodingSchemeDesignator, station.CodeMeaning = "CTROOM1", "L", "CT room 1"
    kind.CodeValue, kind.CodingSchemeDesignator, kind.CodeMeaning = "CT", "DCM", "Computed Tomography"
    ds.ScheduledStationNameCodeSequence = [station]
    ds.ScheduledStationClassCodeSequence = [kind]
    return ds


def post(stack, ds: Dataset | bytes, roles=("writer",), uid: str | None = None, tenant: str = TENANT):
    body = ds if isinstance(ds, bytes) else json.dumps([ds.to_json_dict()]).encode()
    return requests.post(
        stack.url("/dicomweb/workitems"),
        params={"workitem": uid} if uid else None,
        data=body,
        headers={**bearer(tenant, list(roles)), "Content-Type": JSON},
        timeout=30,
    )


def state(stack, uid: str, wanted: str, transaction: str):
    change = Dataset()
    change.ProcedureStepState, change.TransactionUID = wanted, transaction
    return requests.put(
        stack.url(f"/dicomweb/workitems/{uid}/state"),
        data=json.dumps([change.to_json_dict()]),
        headers={**bearer(TENANT, ["writer"]), "Content-Type": JSON},
        timeout=30,
    )


def mwl_status(stack, tmp: Path, accession: str) -> list[str]:
    tmp.mkdir(exist_ok=True)
    s = stack.settings
    result = subprocess.run(
        [
            "findscu",
            "-W",
            "-aet",
            UPS_AE,
            "-aec",
            s.dimse.ae_title,
            "-X",
            "-od",
            str(tmp),
            "-k",
            f"AccessionNumber={accession}",
            "-k",
            "(0040,0100)[0].Modality=CT",
            "-k",
            "(0040,0100)[0].ScheduledStationAETitle=CTROOM1",
            "-k",
            "(0040,0100)[0].ScheduledProcedureStepStatus",
            "127.0.0.1",
            str(s.dimse.port),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    answers = [dcmread(p) for p in sorted(tmp.glob("rsp*.dcm"))]
    for p in tmp.glob("rsp*.dcm"):
        p.unlink()
    return [a.ScheduledProcedureStepSequence[0].ScheduledProcedureStepStatus for a in answers]


def test_workitem_lifecycle_shows_in_the_modality_worklist(stack, tmp_path):
    uid = generate_uid()
    created = post(stack, workitem("UPS0001"), uid=uid)
    assert created.status_code == 201, created.text
    assert created.headers["Location"].endswith(f"/dicomweb/workitems/{uid}")
    got = requests.get(created.headers["Location"], headers=bearer(TENANT, ["reader"]), timeout=30)
    assert got.status_code == 200 and got.json()[0]["00741000"]["Value"] == ["SCHEDULED"]
    assert mwl_status(stack, tmp_path / "a", "UPS0001") == ["SCHEDULED"]
    claim = generate_uid()
    assert state(stack, uid, "IN PROGRESS", claim).status_code == 200
    assert mwl_status(stack, tmp_path / "b", "UPS0001") == ["STARTED"]
    assert state(stack, uid, "COMPLETED", generate_uid()).status_code == 409, "only the claimer may complete it"
    assert state(stack, uid, "COMPLETED", claim).status_code == 200
    assert state(stack, uid, "CANCELED", claim).status_code == 409, "a completed workitem is final"
    assert mwl_status(stack, tmp_path / "c", "UPS0001") == ["COMPLETED"]


def test_search_by_patient_and_start_range(stack):
    first, second = generate_uid(), generate_uid()
    assert post(stack, workitem("UPS0002", start="20261124080000"), uid=first).status_code == 201
    assert post(stack, workitem("UPS0003", start="20261125080000"), uid=second).status_code == 201
    found = requests.get(
        stack.url("/dicomweb/workitems"),
        headers=bearer(TENANT, ["reader"]),
        timeout=30,
        params={"ScheduledProcedureStepStartDateTime": "20261124-20261124235959"},
    )
    assert found.status_code == 200
    uids = {item["00080018"]["Value"][0] for item in found.json()}
    assert first in uids and second not in uids
    by_patient = requests.get(
        stack.url("/dicomweb/workitems"), headers=bearer(TENANT, ["reader"]), timeout=30, params={"PatientID": "PID-UPS0003"}
    )
    assert [item["00080018"]["Value"][0] for item in by_patient.json()] == [second]
    # another tenant sees none of them
    other = requests.get(stack.url(f"/dicomweb/workitems/{first}"), headers=bearer("tenantb", ["reader"]), timeout=30)
    assert other.status_code == 404


@pytest.mark.parametrize(
    ("body", "content_type", "status", "reason"),
    [
        (b"{not json", JSON, 400, "not a DICOM JSON workitem"),
        (b"[]", JSON, 400, "exactly one"),
        (b"<xml/>", "application/xml", 415, "application/dicom+json"),
    ],
)
def test_malformed_workitems_are_refused(stack, body, content_type, status, reason):
    response = requests.post(
        stack.url("/dicomweb/workitems"),
        data=body,
        timeout=30,
        headers={**bearer(TENANT, ["writer"]), "Content-Type": content_type},
    )
    assert response.status_code == status and reason in response.json()["error"]


def test_workitem_rules(stack):
    incomplete = workitem("UPS0009")
    del incomplete.ProcedureStepLabel
    response = post(stack, incomplete)
    assert response.status_code == 400 and "ProcedureStepLabel is required" in response.json()["error"]
    started = workitem("UPS0010")
    started.ProcedureStepState = "IN PROGRESS"
    assert post(stack, started).status_code == 400
    uid = generate_uid()
    assert post(stack, workitem("UPS0011"), uid=uid).status_code == 201
    assert post(stack, workitem("UPS0011"), uid=uid).status_code == 409
    assert post(stack, workitem("UPS0012"), roles=("reader",)).status_code == 403
    assert requests.post(stack.url("/dicomweb/workitems"), data=b"[]", timeout=30).status_code == 401
