"""IHE IOCM rejection (issue 29 item 1) with real clients: a Key Object Selection document titled
with a CID 7011 code, built by highdicom over real scanner files and sent by dcmtk's storescu or
over STOW-RS, withdraws what it references from findscu, movescu, QIDO-RS, WADO-RS and WADO-URI;
a re-send is refused; an admin restores within the grace; expired rejections are deleted by a
workflow, 113039 at once."""

from __future__ import annotations

import io
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest
import requests
from dicomweb_client.api import DICOMwebClient
from pydicom import dcmread
from pynetdicom import AE
from temporalio.client import WorkflowExecutionStatus

from contract import names
from contract.payloads import ExpiryOutcome, ExpiryRequest
from testkit.rejection_notes import QUALITY, RETENTION_EXPIRED, WORKLIST_ENTRY, rejection_note, write_rejection_note
from testkit.replay import replay_all
from testkit.temporal_waits import client_for, wait_completed
from tests.auth import admin_headers, auth_headers
from tests.conftest import IOCM_AE, STORESCP_AE, run
from tests.test_query_retrieve import dcmtk, findscu, received, storescp
from workflows.rejection_expiry import RejectionExpiryWorkflow

REJECTED_OBJECT, NO_SUCH_INSTANCE, CLASS_INSTANCE_CONFLICT = 0xA771, 0xA772, 0xA773


def _nih(data_dir: Path) -> list[Path]:
    return sorted(p for p in (data_dir / "dcm_qa_nih").rglob("*") if p.is_file())


def _uid(path: Path, keyword: str) -> str:
    return str(getattr(dcmread(path, stop_before_pixels=True), keyword))


def _series(paths: list[Path]) -> dict[str, list[Path]]:
    out: dict[str, list[Path]] = {}
    for path in paths:
        out.setdefault(_uid(path, "SeriesInstanceUID"), []).append(path)
    return out


def _processed(stack, tenant: str, study: str) -> None:
    wid = names.study_workflow_id(tenant, study)
    time.sleep(stack.settings.ingest.stable_seconds + 1)  # a workflow that was signalled again runs again
    assert run(wait_completed(stack.settings, [wid], timeout=180)) == {wid: WorkflowExecutionStatus.COMPLETED}


def _store_status(stack, path: Path | bytes, aet: str = IOCM_AE) -> tuple[int, str]:
    """A C-STORE by pynetdicom, for the exact status and ErrorComment."""
    ds = dcmread(io.BytesIO(path) if isinstance(path, bytes) else path)
    ae = AE(ae_title=aet)
    ae.add_requested_context(ds.SOPClassUID, ds.file_meta.TransferSyntaxUID)
    assoc = ae.associate("127.0.0.1", stack.settings.dimse.port, ae_title=stack.settings.dimse.ae_title)
    assert assoc.is_established
    try:
        status = assoc.send_c_store(ds)
    finally:
        assoc.release()
    return int(status.Status), str(status.get("ErrorComment", ""))


def _from_iocm_ae(stack) -> list[str]:
    """A dcmtk sender's AE titles and the archive's address."""
    return ["-aet", IOCM_AE, "-aec", stack.settings.dimse.ae_title, "127.0.0.1", str(stack.settings.dimse.port)]


def _web(stack, tenant: str) -> DICOMwebClient:
    return DICOMwebClient(url=stack.url("/dicomweb"), headers=auth_headers(tenant))


@pytest.fixture(scope="module")
def iocm_study(stack, data_dir) -> dict:
    files = _nih(data_dir)
    result = dcmtk("dcmsend", *_from_iocm_ae(stack), *map(str, files))
    assert result.returncode == 0, result.stderr[-2000:]
    study = _uid(files[0], "StudyInstanceUID")
    _processed(stack, "iocm", study)
    return {"study": study, "files": files, "series": _series(files)}


def test_a_rejection_note_sent_by_storescu_withdraws_its_instances_everywhere(stack, iocm_study, storescp_port, tmp_path):
    study, files = iocm_study["study"], iocm_study["files"]
    [gone_series, *_] = sorted(iocm_study["series"])
    gone = iocm_study["series"][gone_series]
    gone_sops = {_uid(p, "SOPInstanceUID") for p in gone}
    note = write_rejection_note(gone, tmp_path / "rejection.dcm", QUALITY)
    sent = dcmtk("storescu", "-v", *_from_iocm_ae(stack), str(note))
    assert sent.returncode == 0 and "Success" in sent.stdout + sent.stderr, sent.stdout + sent.stderr
    note_uid = _uid(note, "SOPInstanceUID")
    # at once, before the study workflow ran again: QIDO and C-FIND answer from the index
    web = _web(stack, "iocm")
    listed = {i["00080018"]["Value"][0] for i in web.search_for_instances(study)}
    assert listed == {_uid(p, "SOPInstanceUID") for p in files} - gone_sops | {note_uid}
    _processed(stack, "iocm", study)

    images = findscu(
        stack, tmp_path / "img", "QueryRetrieveLevel=IMAGE", f"StudyInstanceUID={study}", "SOPInstanceUID", aet=IOCM_AE
    )
    assert {str(d.SOPInstanceUID) for d in images} == listed
    series = findscu(
        stack, tmp_path / "ser", "QueryRetrieveLevel=SERIES", f"StudyInstanceUID={study}", "SeriesInstanceUID", aet=IOCM_AE
    )
    assert gone_series not in {str(d.SeriesInstanceUID) for d in series} and len(series) == len(iocm_study["series"])
    [found] = findscu(
        stack,
        tmp_path / "st",
        "QueryRetrieveLevel=STUDY",
        f"StudyInstanceUID={study}",
        "NumberOfStudyRelatedInstances",
        aet=IOCM_AE,
    )
    assert int(found.NumberOfStudyRelatedInstances) == len(listed)
    [row] = web.search_for_studies(search_filters={"StudyInstanceUID": study}, fields=["NumberOfStudyRelatedSeries"])
    assert row["00201208"]["Value"] == [len(listed)] and row["00201206"]["Value"] == [len(iocm_study["series"])]

    with storescp(storescp_port, tmp_path / "moved", accept_all=True):
        moved = dcmtk(
            "movescu",
            "-S",
            "-aet",
            IOCM_AE,
            "-aec",
            stack.settings.dimse.ae_title,
            "-aem",
            STORESCP_AE,
            "-k",
            "QueryRetrieveLevel=STUDY",
            "-k",
            f"StudyInstanceUID={study}",
            "127.0.0.1",
            str(stack.settings.dimse.port),
        )
    assert moved.returncode == 0, moved.stderr
    assert set(received(tmp_path / "moved")) == listed

    headers = auth_headers("iocm")
    sop = sorted(gone_sops)[0]
    base = stack.url(f"/dicomweb/studies/{study}/series/{gone_series}")
    assert requests.get(f"{base}/instances/{sop}", headers=headers, timeout=30).status_code == 404
    assert requests.get(f"{base}/metadata", headers=headers, timeout=30).status_code == 404
    wado_uri = {"requestType": "WADO", "studyUID": study, "seriesUID": gone_series, "objectUID": sop}
    assert requests.get(stack.url("/dicomweb/wado"), params=wado_uri, headers=headers, timeout=30).status_code == 404
    metadata = web.retrieve_study_metadata(study)
    assert {m["00080018"]["Value"][0] for m in metadata} == listed

    status, comment = _store_status(stack, gone[0])  # a re-send is refused, with the reason
    assert status == REJECTED_OBJECT and "113001" in comment and "restore" in comment, comment

    feed = requests.get(
        stack.url("/dicomweb/changefeed"), params={"limit": 100}, headers=auth_headers("iocm", ["reader"]), timeout=30
    ).json()
    assert {c["SopInstanceUid"] for c in feed if c["Action"] == "delete"} == gone_sops

    listed_rejected = requests.get(stack.url("/admin/rejected"), headers=admin_headers(["iocm"]), timeout=30)
    assert listed_rejected.status_code == 200
    assert {r["SOPInstanceUID"] for r in listed_rejected.json()} == gone_sops
    assert {r["code"] for r in listed_rejected.json()} == {"113001"} and all(
        r["restorable_until"] for r in listed_rejected.json()
    )
    assert requests.get(stack.url("/admin/rejected"), headers=admin_headers(["other"]), timeout=30).json() == []
    assert requests.get(stack.url("/admin/rejected"), headers=auth_headers("iocm", ["reader"]), timeout=30).status_code == 403

    restore = {"tenant": "iocm", "study": study}
    assert (
        requests.post(
            stack.url("/admin/rejected/restore"), json=restore, headers=admin_headers(["other"]), timeout=30
        ).status_code
        == 403
    )
    restored = requests.post(stack.url("/admin/rejected/restore"), json=restore, headers=admin_headers(["iocm"]), timeout=30)
    assert restored.status_code == 200 and set(restored.json()["restored"]) == gone_sops, restored.text
    _processed(stack, "iocm", study)
    assert {i["00080018"]["Value"][0] for i in web.search_for_instances(study)} == listed | gone_sops
    assert len(web.retrieve_series_metadata(study, gone_series)) == len(gone)
    assert _store_status(stack, gone[0])[0] == 0  # restored: the same object again is a duplicate, accepted
    again = requests.post(stack.url("/admin/rejected/restore"), json=restore, headers=admin_headers(["iocm"]), timeout=30)
    assert again.status_code == 404


def _stow(stack, tenant: str, *paths: Path) -> requests.Response:
    body = b"".join(b"--b\r\nContent-Type: application/dicom\r\n\r\n" + p.read_bytes() + b"\r\n" for p in paths) + b"--b--\r\n"
    headers = {**auth_headers(tenant), "Content-Type": 'multipart/related; type="application/dicom"; boundary=b'}
    return requests.post(stack.url("/dicomweb/studies"), data=body, headers=headers, timeout=120)


def _instance_rows(stack, tenant: str, sops: set[str]) -> int:
    with psycopg.connect(stack.settings.effective_postgres_dsn()) as conn:
        row = conn.execute(
            "SELECT count(*) FROM instance WHERE tenant = %s AND sop_uid = ANY(%s)", (tenant, sorted(sops))
        ).fetchone()
    return int(row[0])


def test_a_retention_expired_note_over_stow_deletes_at_once_and_a_resend_stays_refused(stack, data_dir, tmp_path):
    tenant, files = "iocm-expired", _nih(data_dir)
    assert _stow(stack, tenant, *files).status_code == 200
    study = _uid(files[0], "StudyInstanceUID")
    _processed(stack, tenant, study)
    [gone_series, *_] = sorted(_series(files))
    gone = _series(files)[gone_series]
    gone_sops = {_uid(p, "SOPInstanceUID") for p in gone}
    note = write_rejection_note(gone, tmp_path / "expired.dcm", RETENTION_EXPIRED)
    assert _stow(stack, tenant, note).status_code == 200
    deadline = time.monotonic() + 90
    while _instance_rows(stack, tenant, gone_sops) and time.monotonic() < deadline:
        time.sleep(1)
    assert _instance_rows(stack, tenant, gone_sops) == 0, "113039 deletes at once, not at the next scheduled run"
    blobs = stack.settings.var_path / "blobs" / tenant
    assert len(list(blobs.rglob("*.dcm"))) == len(files) - len(gone) + 1
    shown = requests.get(stack.url("/admin/rejected"), headers=admin_headers([tenant]), timeout=30).json()
    assert {r["SOPInstanceUID"] for r in shown if r["deleted_at"]} == gone_sops
    refused = _stow(stack, tenant, gone[0])
    assert refused.status_code == 409, refused.text
    [failed] = refused.json()["00081198"]["Value"]
    assert failed["00081197"]["Value"] == [REJECTED_OBJECT]
    restore = {"tenant": tenant, "study": study}
    assert (
        requests.post(stack.url("/admin/rejected/restore"), json=restore, headers=admin_headers([tenant]), timeout=30).status_code
        == 404
    )


def test_rejections_expire_after_the_grace_by_a_workflow(stack, data_dir, tmp_path):
    tenant, files = "iocm-grace", _nih(data_dir)
    assert _stow(stack, tenant, *files).status_code == 200
    study = _uid(files[0], "StudyInstanceUID")
    by_series = _series(files)
    first, second = sorted(by_series)[:2]
    assert _stow(stack, tenant, write_rejection_note(by_series[first], tmp_path / "a.dcm", WORKLIST_ENTRY)).status_code == 200
    _processed(stack, tenant, study)
    cli = stack.cli("rejected", "--tenant", tenant)
    assert cli.returncode == 0 and "113038" in cli.stdout and "2 instance(s)" in cli.stdout, cli.stdout + cli.stderr

    async def expire(as_of: datetime) -> ExpiryOutcome:
        client = await client_for(stack.settings)
        return await client.execute_workflow(
            names.REJECTION_EXPIRY_WORKFLOW,
            ExpiryRequest(as_of.isoformat()),
            id=f"rejection-expiry-test-{as_of:%s}",
            task_queue=stack.settings.temporal.task_queue,
            result_type=ExpiryOutcome,
        )

    gone = {_uid(p, "SOPInstanceUID") for p in by_series[first]}
    run(expire(datetime.now(UTC)))
    assert _instance_rows(stack, tenant, gone) == len(gone), "within the grace nothing goes"
    later = stack.cli("rejected", "expire", "--as-of", (datetime.now(UTC) + timedelta(days=31)).isoformat())
    assert later.returncode == 0 and "deleted" in later.stdout, later.stdout + later.stderr
    assert _instance_rows(stack, tenant, gone) == 0
    assert len(_web(stack, tenant).search_for_instances(study)) == len(files) - len(gone) + 1
    assert run(expire(datetime.now(UTC) + timedelta(days=32))).instances == 0  # nothing twice
    query = "WorkflowType = 'RejectionExpiryWorkflow' AND ExecutionStatus = 'Completed'"
    assert run(replay_all(stack.settings, query, [RejectionExpiryWorkflow])) >= 2


def _forged(files: list[Path], out: Path, **reference: str) -> Path:
    """A rejection note over `files` whose first reference is changed as `reference` says."""
    ds = rejection_note(files)
    study = ds.CurrentRequestedProcedureEvidenceSequence[0]
    item = study.ReferencedSeriesSequence[0].ReferencedSOPSequence[0]
    for keyword, value in reference.items():
        setattr(study if keyword == "StudyInstanceUID" else item, keyword, value)
    ds.save_as(out, enforce_file_format=True)
    return out


def test_a_rejection_note_that_cannot_apply_is_refused_and_changes_nothing(stack, iocm_study, data_dir, tmp_path):
    study, files = iocm_study["study"], iocm_study["files"]
    held = _uid(files[0], "SOPInstanceUID")
    notes = {
        "another study": (_forged(files[:1], tmp_path / "a.dcm", StudyInstanceUID="1.2.3.4"), NO_SUCH_INSTANCE, "own study"),
        "never stored": (
            _forged(files[:1], tmp_path / "b.dcm", ReferencedSOPInstanceUID="1.2.3.4.5"),
            NO_SUCH_INSTANCE,
            "1.2.3.4.5",
        ),
        "other SOP class": (
            _forged(files[:1], tmp_path / "c.dcm", ReferencedSOPClassUID="1.2.840.10008.5.1.4.1.1.2"),
            CLASS_INSTANCE_CONFLICT,
            "not as stored",
        ),
        "not a UID": (_forged(files[:1], tmp_path / "d.dcm", ReferencedSOPInstanceUID="../../x"), 0xC000, "not a UID"),
    }
    for case, (note, expected, named) in notes.items():
        status, comment = _store_status(stack, note)
        assert status == expected and named in comment, (case, hex(status), comment)
    listed = {i["00080018"]["Value"][0] for i in _web(stack, "iocm").search_for_instances(study)}
    assert not {_uid(note, "SOPInstanceUID") for note, _, _ in notes.values()} & listed, "a refused note is not stored"
    assert held in listed, "and what it named is untouched"
