"""DELETE through DICOMweb: rows, blobs, generated JSON and cache go; other tenants keep theirs."""

from __future__ import annotations

import asyncio
import io
import threading

import psycopg
import requests
from dicomweb_client.api import DICOMwebClient
from pydicom import dcmread
from pydicom.filewriter import dcmwrite
from pydicom.uid import generate_uid
from temporalio.client import WorkflowExecutionStatus

from archive.blobstore import LocalBlobStore
from archive.index.deletion import delete_objects
from archive.index.pool import open_index_pool
from archive.services.receipt import Outcome, Receiver
from testkit.metadata_waits import wait_metadata_settled
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
    # the ready study's counts, which QIDO answers from, follow at once (not when the workflow hears of it)
    [series_row] = [s for s in gone.search_for_series(study) if s["0020000E"]["Value"][0] == series]
    assert series_row["00201209"]["Value"] == [1]
    assert gone.search_for_studies(search_filters={"StudyInstanceUID": study})[0]["00201208"]["Value"] == [len(datasets) - 1]
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


def _one_series(data_dir, n: int) -> list:
    """Real MR files re-stamped into one new series of one new study, each with its own SOP Instance UID."""
    study, series = generate_uid(), generate_uid()
    out = []
    for path in sorted((data_dir / "dcm_qa_nih").rglob("*.dcm"))[:n]:
        ds = dcmread(path)
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        out.append(ds)
    return out


def _sops(response: requests.Response) -> set[str]:
    return {doc["00080018"]["Value"][0] for doc in response.json()}


def test_delete_one_store_another_serves_the_new_metadata(stack, data_dir):
    """Same instance count before and after: the series version, not the count, says what is fresh."""
    tenant = "versioned"
    a, b, c = _one_series(data_dir, 3)
    study, series = str(a.StudyInstanceUID), str(a.SeriesInstanceUID)
    client = DICOMwebClient(url=stack.url("/dicomweb"), headers=auth_headers(tenant))
    client.store_instances(datasets=[a, b])
    wait_metadata_settled(stack.settings, tenant, series)
    url = stack.url(f"/dicomweb/studies/{study}/series/{series}/metadata")
    first = requests.get(url, headers=auth_headers(tenant), timeout=30)
    assert first.status_code == 200 and _sops(first) == {str(a.SOPInstanceUID), str(b.SOPInstanceUID)}
    etag = first.headers["ETag"]

    gone = stack.url(f"/dicomweb/studies/{study}/series/{series}/instances/{a.SOPInstanceUID}")
    assert requests.delete(gone, headers=auth_headers(tenant), timeout=30).status_code == 204
    client.store_instances(datasets=[c])
    now = {str(b.SOPInstanceUID), str(c.SOPInstanceUID)}
    revalidated = requests.get(url, headers=auth_headers(tenant, **{"If-None-Match": etag}), timeout=30)
    assert revalidated.status_code == 200, "the old ETag must not match the changed series"
    assert _sops(revalidated) == now and revalidated.headers["ETag"] != etag
    wait_metadata_settled(stack.settings, tenant, series)  # and from the regenerated document
    settled = requests.get(url, headers=auth_headers(tenant), timeout=30)
    assert _sops(settled) == now


class HeldCommit(LocalBlobStore):
    """A receipt paused after its row went in and before its transaction commits (blob being fsync'd)."""

    def __init__(self, root) -> None:
        super().__init__(root)
        self.entered, self.release = threading.Event(), threading.Event()

    def commit(self, staged, key: str) -> None:
        self.entered.set()
        assert self.release.wait(60)
        super().commit(staged, key)


def test_delete_racing_a_receipt_never_orphans_an_acknowledged_instance(stack, data_dir):
    tenant = "racing"
    first, second = (_dataset_bytes(ds) for ds in _one_series(data_dir, 2))
    blobs = HeldCommit(stack.settings.var_path / "blobs")
    blobs.release.set()

    async def go():
        pool = await open_index_pool(stack.settings.effective_postgres_dsn(), max_size=4)
        try:
            receiver = Receiver(blobs, pool)
            kept = await receiver.receive(tenant, blobs.stage_bytes(first), "test")
            blobs.release.clear()
            blobs.entered.clear()
            receipt = asyncio.create_task(receiver.receive(tenant, blobs.stage_bytes(second), "test"))
            assert await asyncio.to_thread(blobs.entered.wait, 30)
            deletion = asyncio.create_task(delete_objects(pool, tenant, kept.attributes.study_uid))
            await asyncio.sleep(1.0)  # the DELETE is now waiting on the receipt, one way or another
            blobs.release.set()
            return await receipt, await deletion
        finally:
            await pool.close()

    receipt, deleted = run(go())
    assert receipt.outcome is Outcome.STORED
    with psycopg.connect(stack.settings.effective_postgres_dsn()) as conn:
        rows = conn.execute("SELECT blob_key FROM instance WHERE tenant = %s", (tenant,)).fetchall()
    # acknowledged: either its row is still there, or the DELETE took it and handed back its blob to remove
    assert [(receipt.blob_key,)] == rows or receipt.blob_key in deleted.blob_keys, (rows, deleted)
    for key in deleted.blob_keys:
        blobs.delete(key)


def _dataset_bytes(ds) -> bytes:
    buffer = io.BytesIO()
    dcmwrite(buffer, ds, enforce_file_format=True)
    return buffer.getvalue()


def test_an_instance_stored_again_survives_the_blob_removal_of_its_earlier_delete(stack, data_dir):
    """DELETE removes blobs after its rows committed; the same object stored again in between keeps its bytes."""
    tenant = "restored"
    (payload,) = (_dataset_bytes(ds) for ds in _one_series(data_dir, 1))
    blobs = LocalBlobStore(stack.settings.var_path / "blobs")

    async def go():
        pool = await open_index_pool(stack.settings.effective_postgres_dsn(), max_size=2)
        try:
            receiver = Receiver(blobs, pool)
            first = await receiver.receive(tenant, blobs.stage_bytes(payload), "test")
            deleted = await delete_objects(pool, tenant, first.attributes.study_uid)
            again = await receiver.receive(tenant, blobs.stage_bytes(payload), "test")
            return deleted, again
        finally:
            await pool.close()

    deleted, again = run(go())
    assert again.outcome is Outcome.STORED
    for key in deleted.blob_keys:  # the DELETE request finishing its work late
        blobs.delete(key)
    assert blobs.read_bytes(again.blob_key) == payload
