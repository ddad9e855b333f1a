"""DELETE through DICOMweb: rows, blobs, generated JSON and cache go; other tenants keep theirs."""

from __future__ import annotations

import requests
from dicomweb_client.api import DICOMwebClient
from pydicom import dcmread
from temporalio.client import WorkflowExecutionStatus

from testkit.temporal_waits import client_for, wait_completed
from tests.auth import auth_headers, bearer
from tests.conftest import run


def test_delete_instance_series_study(stack, data_dir):
    paths = sorted((data_dir / "dcm_qa_nih").rglob("*.dcm"))
    datasets = [dcmread(p) for p in paths]
    study = str(datasets[0].StudyInstanceUID)
    series = str(datasets[0].SeriesInstanceUID)
    gone, kept = (DICOMwebClient(url=stack.url("/dicomweb"), headers=auth_headers(t)) for t in ("deleting", "keeping"))
    for client in (gone, kept):
        client.store_instances(datasets=datasets)
    wid = f"study:deleting:{study}"
    assert run(wait_completed(stack.settings, [wid], timeout=120))[wid] == WorkflowExecutionStatus.COMPLETED
    assert len(gone.retrieve_series_metadata(study, series)) == 2  # now generated and cached
    blobs = stack.settings.var_path / "blobs" / "deleting"
    before = len(list(blobs.rglob("*.dcm")))

    base = stack.url(f"/dicomweb/studies/{study}")
    headers = auth_headers("deleting")
    sop = str(datasets[0].SOPInstanceUID)
    assert requests.delete(f"{base}/series/{series}/instances/{sop}", headers=headers, timeout=30).status_code == 204
    assert len(gone.search_for_instances(study, series)) == 1
    assert len(gone.retrieve_series_metadata(study, series)) == 1  # not the stale cached document
    assert len(list(blobs.rglob("*.dcm"))) == before - 1

    assert requests.delete(f"{base}/series/{series}", headers=headers, timeout=30).status_code == 204
    assert series not in [s["0020000E"]["Value"][0] for s in gone.search_for_series(study)]
    assert requests.delete(base, headers=headers, timeout=30).status_code == 204
    assert gone.search_for_studies() == []
    assert not list(blobs.rglob("*.dcm")) and not list(blobs.rglob("*.json.gz"))
    assert requests.delete(base, headers=headers, timeout=30).status_code == 404
    assert len(kept.search_for_instances(study)) == len(datasets)  # the wall between tenants held

    async def recorded() -> int:
        await wait_completed(stack.settings, [wid], timeout=120)
        return (await (await client_for(stack.settings)).get_workflow_handle(wid).result())["deleted"]

    assert run(recorded()) > 0


def test_capabilities_page(stack):
    assert requests.get(stack.url("/dicomweb/capabilities"), timeout=30).status_code == 401
    response = requests.get(stack.url("/dicomweb/capabilities"), headers=bearer("default", ["reader"]), timeout=30)
    assert response.status_code == 200
    assert "PatientName" in response.json()["QIDO-RS"]["attributes"]
    dimse = response.json()["DIMSE"]["services"]
    assert dimse["C-MOVE"]["sop_classes"] == ["1.2.840.10008.5.1.4.1.2.1.2", "1.2.840.10008.5.1.4.1.2.2.2"]
    assert dimse["C-FIND"]["needs"] == "find"
    assert requests.get(stack.url("/openapi.json"), timeout=30).json()["paths"]["/dicomweb/studies"]
