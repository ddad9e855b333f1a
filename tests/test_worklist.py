"""Modality Worklist: dcmtk's example worklist database (wlistdb/OFFIS) turned into DICOM JSON by
dcmtk's own tools, imported with `dicomflow worklist import`, and queried with `findscu -W`."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import requests
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from pynetdicom import AE
from pynetdicom.sop_class import ModalityPerformedProcedureStep, ModalityWorklistInformationFind

from tests.auth import bearer
from tests.conftest import MODALITY_AE, QR_AE

EXAMPLES = Path("/usr/share/doc/dcmtk/examples")
TENANT = "qr"


def dcmtk(*args: str) -> subprocess.CompletedProcess:
    result = subprocess.run(list(args), capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return result


@pytest.fixture(scope="module")
def worklist(stack, tmp_path_factory) -> list[Dataset]:
    """The ten OFFIS example items, as dcm2json writes them, imported into tenant qr."""
    folder = tmp_path_factory.mktemp("wlist")
    items = []
    for dump in sorted((EXAMPLES / "wlistdb" / "OFFIS").glob("*.dump")):
        dcm = folder / f"{dump.stem}.wl"
        dcmtk("dump2dcm", "--write-xfer-little", str(dump), str(dcm))
        items.append(json.loads(dcmtk("dcm2json", str(dcm)).stdout))
    document = folder / "worklist.json"
    document.write_text(json.dumps(items))
    result = stack.cli("worklist", "import", str(document), "--tenant", TENANT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{len(items)} scheduled procedure step(s) imported" in result.stdout
    return [Dataset.from_json(item) for item in items]


def findscu_w(stack, out: Path, *keys: str, query_file: Path | None = None, aet: str = QR_AE) -> list[Dataset]:
    out.mkdir(exist_ok=True)
    s = stack.settings
    args = ["findscu", "-W", "-aet", aet, "-aec", s.dimse.ae_title, "-X", "-od", str(out)]
    for key in keys:
        args += ["-k", key]
    dcmtk(*args, "127.0.0.1", str(s.dimse.port), *([str(query_file)] if query_file else []))
    return [dcmread(p) for p in sorted(out.glob("rsp*.dcm"))]


def accessions(answers: list[Dataset]) -> list[str]:
    return sorted(str(a.AccessionNumber) for a in answers)


def expected(items: list[Dataset], predicate) -> list[str]:
    return sorted(str(i.AccessionNumber) for i in items if predicate(i, i.ScheduledProcedureStepSequence[0]))


def test_dcmtk_example_query_returns_every_item_with_the_keys_it_asked(stack, worklist, tmp_path):
    query = tmp_path / "wlistqry1.dcm"
    dcmtk("dump2dcm", str(EXAMPLES / "wlistqry" / "wlistqry1.dump"), str(query))
    answers = findscu_w(stack, tmp_path / "out", query_file=query)
    assert accessions(answers) == sorted(str(i.AccessionNumber) for i in worklist)
    mozart = next(a for a in answers if a.AccessionNumber == "00001")
    assert str(mozart.PatientName) == "MOZART^WOLFGANG^AMADEUS" and mozart.RequestedProcedureID
    assert "ScheduledProcedureStepSequence" in mozart and mozart.ScheduledProcedureStepSequence[0].Modality == "MR"
    assert "StudyInstanceUID" in mozart  # asked for, so answered


def test_sequence_matching_on_modality_and_station(stack, worklist, tmp_path):
    answers = findscu_w(
        stack,
        tmp_path / "ct",
        "AccessionNumber",
        "PatientName",
        "(0040,0100)[0].Modality=CT",
        "(0040,0100)[0].ScheduledStationAETitle",
    )
    assert accessions(answers) == expected(worklist, lambda i, s: s.Modality == "CT")
    assert all(a.ScheduledProcedureStepSequence[0].Modality == "CT" for a in answers)
    # a station among several scheduled ones
    answers = findscu_w(stack, tmp_path / "nn77", "AccessionNumber", "(0040,0100)[0].ScheduledStationAETitle=NN77")
    assert accessions(answers) == expected(worklist, lambda i, s: "NN77" in s.ScheduledStationAETitle)
    assert len(answers) == 2


def test_date_range_and_patient_name_wildcard(stack, worklist, tmp_path):
    answers = findscu_w(
        stack,
        tmp_path / "d",
        "AccessionNumber",
        "PatientName=vivaldi*",
        "(0040,0100)[0].ScheduledProcedureStepStartDate=19960101-19961231",
    )
    assert accessions(answers) == expected(
        worklist,
        lambda i, s: str(i.PatientName).startswith("VIVALDI") and "19960101" <= s.ScheduledProcedureStepStartDate <= "19961231",
    )
    assert answers


def test_worklist_needs_the_worklist_service(stack, worklist):
    ae = AE(ae_title=MODALITY_AE)
    ae.add_requested_context(ModalityWorklistInformationFind)
    assoc = ae.associate("127.0.0.1", stack.settings.dimse.port, ae_title=stack.settings.dimse.ae_title)
    identifier = Dataset()
    identifier.AccessionNumber = ""
    try:
        statuses = [s.Status for s, _ in assoc.send_c_find(identifier, ModalityWorklistInformationFind)]
    finally:
        assoc.release()
    assert statuses == [0x0124]


def test_import_refuses_an_item_without_accession_number_and_imports_nothing(stack, worklist, tmp_path):
    item = worklist[0].to_json_dict()
    del item["00080050"]
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([worklist[1].to_json_dict(), item]))
    result = stack.cli("worklist", "import", str(bad), "--tenant", "worklist-empty")
    assert result.returncode == 2 and "AccessionNumber is missing" in result.stderr
    ae = AE(ae_title=QR_AE)
    ae.add_requested_context(ModalityWorklistInformationFind)
    # QR_AE is bound to tenant qr; the refused import's tenant stays empty (checked in the index)
    import psycopg

    with psycopg.connect(stack.settings.effective_postgres_dsn()) as conn:
        assert conn.execute("SELECT count(*) FROM worklist_item WHERE tenant = 'worklist-empty'").fetchone() == (0,)


# -- MPPS -------------------------------------------------------------------------------------------


def _mpps_assoc(stack):
    ae = AE(ae_title=QR_AE)
    ae.add_requested_context(ModalityPerformedProcedureStep)
    ae.add_requested_context(ModalityWorklistInformationFind)
    assoc = ae.associate("127.0.0.1", stack.settings.dimse.port, ae_title=stack.settings.dimse.ae_title)
    assert assoc.is_established
    return assoc


def _in_progress(item: Dataset, study_uid: str) -> Dataset:
    """An N-CREATE as a modality sends it when the exam starts (PS3.4 F.7.2.1)."""
    ds = Dataset()
    scheduled = Dataset()
    scheduled.StudyInstanceUID = study_uid
    scheduled.AccessionNumber = item.AccessionNumber
    scheduled.ScheduledProcedureStepID = item.ScheduledProcedureStepSequence[0].ScheduledProcedureStepID
    ds.ScheduledStepAttributesSequence = [scheduled]
    ds.PatientName, ds.PatientID = item.PatientName, item.PatientID
    ds.PerformedProcedureStepID = "PPS1"
    ds.PerformedStationAETitle = QR_AE
    ds.PerformedProcedureStepStartDate, ds.PerformedProcedureStepStartTime = "20261123", "101500"
    ds.PerformedProcedureStepStatus = "IN PROGRESS"
    ds.Modality = item.ScheduledProcedureStepSequence[0].Modality
    return ds


def _worklist_status(assoc, accession: str) -> str:
    identifier = Dataset()
    identifier.AccessionNumber = accession
    step = Dataset()
    step.ScheduledProcedureStepStatus = ""
    identifier.ScheduledProcedureStepSequence = [step]
    answers = [ds for s, ds in assoc.send_c_find(identifier, ModalityWorklistInformationFind) if s.Status == 0xFF00]
    return answers[0].ScheduledProcedureStepSequence[0].ScheduledProcedureStepStatus


def test_mpps_in_progress_then_completed_shows_on_worklist_and_study(stack, worklist, data_dir):
    study_file = sorted((data_dir / "dcm_qa_nih").rglob("*"))[-1]
    study_uid = str(dcmread(study_file, stop_before_pixels=True).StudyInstanceUID)
    s = stack.settings
    dcmtk("dcmsend", "-aet", QR_AE, "-aec", s.dimse.ae_title, "127.0.0.1", str(s.dimse.port), str(study_file))
    item = next(i for i in worklist if i.AccessionNumber == "00001")
    mpps_uid = generate_uid()
    assoc = _mpps_assoc(stack)
    try:
        status, _ = assoc.send_n_create(_in_progress(item, study_uid), ModalityPerformedProcedureStep, mpps_uid)
        assert status.Status == 0x0000
        assert _worklist_status(assoc, "00001") == "STARTED"
        again, _ = assoc.send_n_create(_in_progress(item, study_uid), ModalityPerformedProcedureStep, mpps_uid)
        assert again.Status == 0x0111
        done = Dataset()
        done.PerformedProcedureStepStatus = "COMPLETED"
        done.PerformedProcedureStepEndDate, done.PerformedProcedureStepEndTime = "20261123", "103000"
        status, _ = assoc.send_n_set(done, ModalityPerformedProcedureStep, mpps_uid)
        assert status.Status == 0x0000
        assert _worklist_status(assoc, "00001") == "COMPLETED"
        late, _ = assoc.send_n_set(done, ModalityPerformedProcedureStep, mpps_uid)
        assert late.Status == 0x0110 and "COMPLETED" in late.ErrorComment
    finally:
        assoc.release()
    response = requests.get(
        stack.url("/dicomweb/studies"),
        timeout=30,
        headers=bearer(TENANT, ["reader"]),
        params={"StudyInstanceUID": study_uid, "includefield": "PerformedProcedureStepStatus"},
    )
    assert response.json()[0]["00400252"]["Value"] == ["COMPLETED"]


def test_mpps_must_start_in_progress_and_exist_to_be_set(stack, worklist):
    item = worklist[2]
    assoc = _mpps_assoc(stack)
    try:
        step = _in_progress(item, generate_uid())
        step.PerformedProcedureStepStatus = "COMPLETED"
        status, _ = assoc.send_n_create(step, ModalityPerformedProcedureStep, generate_uid())
        assert status.Status == 0x0106 and "IN PROGRESS" in status.ErrorComment
        change = Dataset()
        change.PerformedProcedureStepStatus = "COMPLETED"
        status, _ = assoc.send_n_set(change, ModalityPerformedProcedureStep, generate_uid())
        assert status.Status == 0x0112
    finally:
        assoc.release()
