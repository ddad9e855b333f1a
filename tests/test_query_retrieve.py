"""DIMSE query/retrieve with real clients: dcmtk's findscu, movescu (to storescp) and getscu, and
pynetdicom where the test needs a status or a C-CANCEL. Tenant "qr" holds real scanner files."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pydicom
import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)
from pynetdicom import AE, build_role, evt
from pynetdicom.sop_class import (
    PatientRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
)

from archive.dicom.part10_meta import HEAD_BYTES, read_layout
from testkit.temporal_waits import list_ids
from tests.conftest import MODALITY_AE, QR_AE, QR_OTHER_AE, STORESCP_AE, STORESCP_B_AE, run

CHARSETS = Path(pydicom.__file__).parent / "data" / "charset_files"
NIH_STUDY_SERIES = 4
TS_STUDY = "crlab"  # dcm_qa_ts: one image in nine transfer syntaxes, five of them compressed


def dcmtk(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(list(args), capture_output=True, text=True, timeout=timeout)


def sop_uids(paths: list[Path]) -> set[str]:
    return {str(dcmread(p, stop_before_pixels=True).SOPInstanceUID) for p in paths}


@pytest.fixture(scope="module")
def qr_data(stack, data_dir) -> dict[str, list[Path]]:
    """Scanner files stored into tenant "qr" by dcmsend, as a modality of that tenant would."""
    sets = {
        "nih": sorted(p for p in (data_dir / "dcm_qa_nih").rglob("*") if p.is_file()),
        "ts": sorted(p for p in (data_dir / "dcm_qa_ts").rglob("*.dcm")),
        "charsets": [CHARSETS / f"{name}.dcm" for name in ("chrH31", "chrRuss", "chrGreek")],
        "toshiba": sorted(p for p in (data_dir / "dcm_qa_toshiba").rglob("*") if p.is_file()),
    }
    s = stack.settings
    files = [str(p) for paths in sets.values() for p in paths]
    result = dcmtk("dcmsend", "-aet", QR_AE, "-aec", s.dimse.ae_title, "127.0.0.1", str(s.dimse.port), *files, timeout=900)
    assert result.returncode == 0, result.stderr[-2000:]
    return sets


def findscu(stack, out: Path, *keys: str, model: str = "-S", aet: str = QR_AE) -> list[Dataset]:
    """findscu's answers, each written to a file by -X and read back."""
    out.mkdir(exist_ok=True)
    s = stack.settings
    args = ["findscu", model, "-aet", aet, "-aec", s.dimse.ae_title, "-X", "-od", str(out)]
    for key in keys:
        args += ["-k", key]
    result = dcmtk(*args, "127.0.0.1", str(s.dimse.port))
    assert result.returncode == 0, result.stderr
    return [dcmread(p) for p in sorted(out.glob("rsp*.dcm"))]


def _find(stack, identifier: Dataset, model=StudyRootQueryRetrieveInformationModelFind, aet: str = QR_AE):
    ae = AE(ae_title=aet)
    ae.add_requested_context(model)
    assoc = ae.associate("127.0.0.1", stack.settings.dimse.port, ae_title=stack.settings.dimse.ae_title)
    assert assoc.is_established
    try:
        return [(status.Status, ds, status.get("ErrorComment")) for status, ds in assoc.send_c_find(identifier, model)]
    finally:
        assoc.release()


def query(level: str, charset: str | None = None, **keys: str) -> Dataset:
    ds = Dataset()
    ds.QueryRetrieveLevel = level
    if charset:
        ds.SpecificCharacterSet = charset
    for keyword, value in keys.items():
        setattr(ds, keyword, value)
    return ds


# -- C-FIND ---------------------------------------------------------------------------------------


def test_findscu_patient_root_lists_patients_with_their_counts(stack, qr_data, tmp_path):
    answers = findscu(
        stack,
        tmp_path,
        "QueryRetrieveLevel=PATIENT",
        "PatientID",
        "PatientName",
        "NumberOfPatientRelatedStudies",
        "NumberOfPatientRelatedInstances",
        model="-P",
    )
    by_id = {str(a.PatientID): a for a in answers}
    assert {"DEV", "crlab", "FA191122", "H31EXAMPLE", "SCSRUSS", "SCSGREEK"} <= set(by_id)
    assert str(by_id["DEV"].PatientName) == "Test^Regression"
    assert int(by_id["DEV"].NumberOfPatientRelatedStudies) == 1
    assert int(by_id["FA191122"].NumberOfPatientRelatedInstances) == len(qr_data["toshiba"])
    assert all(a.QueryRetrieveLevel == "PATIENT" for a in answers)


def test_findscu_study_root_wildcard_and_date_range(stack, qr_data, tmp_path):
    answers = findscu(
        stack,
        tmp_path,
        "QueryRetrieveLevel=STUDY",
        "PatientName=test*",
        "StudyDate=20180101-20191231",
        "StudyInstanceUID",
        "ModalitiesInStudy",
        "NumberOfStudyRelatedSeries",
    )
    assert [str(a.PatientName) for a in answers] == ["Test^Regression"]  # case-insensitive; stc_test is 2014
    assert int(answers[0].NumberOfStudyRelatedSeries) == NIH_STUDY_SERIES
    assert list(answers[0].ModalitiesInStudy) == ["MR"] or answers[0].ModalitiesInStudy == "MR"
    # a key the index does not hold comes back zero-length, as asked
    answers = findscu(stack, tmp_path / "b", "QueryRetrieveLevel=STUDY", "PatientID=crlab", "StudyInstanceUID", "InstitutionName")
    assert len(answers) == 1 and "InstitutionName" in answers[0] and not answers[0].InstitutionName


def test_findscu_series_and_image_levels(stack, qr_data, tmp_path):
    study = str(dcmread(qr_data["nih"][0], stop_before_pixels=True).StudyInstanceUID)
    series = findscu(
        stack,
        tmp_path,
        "QueryRetrieveLevel=SERIES",
        f"StudyInstanceUID={study}",
        "SeriesInstanceUID",
        "SeriesNumber",
        "Modality",
        "NumberOfSeriesRelatedInstances",
    )
    assert sorted(int(s.SeriesNumber) for s in series) == [3, 4, 5, 6]
    assert all(int(s.NumberOfSeriesRelatedInstances) == 2 and s.StudyInstanceUID == study for s in series)
    images = findscu(
        stack,
        tmp_path / "i",
        "QueryRetrieveLevel=IMAGE",
        f"StudyInstanceUID={study}",
        f"SeriesInstanceUID={series[0].SeriesInstanceUID}",
        "SOPInstanceUID",
        "InstanceNumber",
    )
    expected = {str(d.SOPInstanceUID) for d in map(dcmread, qr_data["nih"]) if d.SeriesInstanceUID == series[0].SeriesInstanceUID}
    assert {str(i.SOPInstanceUID) for i in images} == expected


def test_find_in_the_askers_character_set(stack, qr_data):
    japanese = dcmread(CHARSETS / "chrH31.dcm")
    answers = _find(stack, query("STUDY", "\\ISO 2022 IR 87", PatientName="山田*", StudyInstanceUID=""))
    pending = [ds for status, ds, _ in answers if status == 0xFF00]
    assert len(pending) == 1 and answers[-1][0] == 0
    assert pending[0].SpecificCharacterSet == ["", "ISO 2022 IR 87"]
    assert str(pending[0].PatientName) == str(japanese.PatientName)  # all three component groups survive
    russian = dcmread(CHARSETS / "chrRuss.dcm")
    answers = _find(stack, query("STUDY", "ISO_IR 144", PatientName="люк*", StudyInstanceUID=""))
    assert [str(ds.PatientName) for s, ds, _ in answers if s == 0xFF00] == [str(russian.PatientName)]
    greek = dcmread(CHARSETS / "chrGreek.dcm")  # asked in ASCII: the answer comes in UTF-8
    answers = _find(stack, query("STUDY", PatientID="SCSGREEK", PatientName="", StudyInstanceUID=""))
    ((status, ds, _), _) = answers
    assert ds.SpecificCharacterSet == "ISO_IR 192" and str(ds.PatientName) == str(greek.PatientName)


def _find_in(stack, identifier: Dataset, syntax: str) -> list[Dataset]:
    """Pending answers to a Study Root C-FIND on an association that offers only `syntax`."""
    ae = AE(ae_title=QR_AE)
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind, [syntax])
    assoc = ae.associate("127.0.0.1", stack.settings.dimse.port, ae_title=stack.settings.dimse.ae_title)
    assert assoc.is_established
    try:
        answers = list(assoc.send_c_find(identifier, StudyRootQueryRetrieveInformationModelFind))
    finally:
        assoc.release()
    assert answers[-1][0].Status == 0x0000
    return [ds for status, ds in answers if status.Status == 0xFF00]


def test_answers_are_the_same_in_every_transfer_syntax(stack, qr_data):
    """Answers are encoded ahead for implicit and explicit VR little endian (deflated too) and built
    of ordinary elements for big endian: the client decodes the same values from each."""
    series = str(dcmread(qr_data["nih"][0], stop_before_pixels=True).SeriesInstanceUID)
    images = query("IMAGE", SeriesInstanceUID=series, SOPInstanceUID="", InstanceNumber="")
    for keyword in ("Rows", "Columns", "BitsAllocated"):  # US: binary numbers in the answer
        setattr(images, keyword, None)
    japanese = query(
        "STUDY",
        "\\ISO 2022 IR 87",
        PatientName="山田*",
        StudyInstanceUID="",
        ModalitiesInStudy="",
        NumberOfStudyRelatedInstances="",
        StudyDate="",
        InstitutionName="",
    )
    for identifier in (images, japanese):
        by_syntax = {
            syntax: sorted(([(e.tag, e.VR, e.value) for e in ds] for ds in _find_in(stack, identifier, syntax)), key=repr)
            for syntax in (ImplicitVRLittleEndian, ExplicitVRLittleEndian, DeflatedExplicitVRLittleEndian, ExplicitVRBigEndian)
        }
        first = by_syntax[ImplicitVRLittleEndian]
        assert first and all(answers == first for answers in by_syntax.values()), by_syntax
    answers = _find_in(stack, images, ExplicitVRLittleEndian)
    expected = {(int(d.Rows), int(d.Columns)) for d in map(dcmread, qr_data["nih"]) if d.SeriesInstanceUID == series}
    assert {(a.Rows, a.Columns) for a in answers} == expected and all(a.BitsAllocated == 16 for a in answers)


def _find_then_cancel(stack, series: str) -> list[int]:
    """A C-FIND of a whole series, cancelled as soon as its first match arrives."""
    ae = AE(ae_title=QR_AE)
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
    assoc = ae.associate("127.0.0.1", stack.settings.dimse.port, ae_title=stack.settings.dimse.ae_title)
    assert assoc.is_established
    statuses = []
    try:
        responses = assoc.send_c_find(
            query("IMAGE", SeriesInstanceUID=series, SOPInstanceUID=""), StudyRootQueryRetrieveInformationModelFind, msg_id=7
        )
        for status, _ in responses:
            statuses.append(status.Status)
            if len(statuses) == 1:
                assoc.send_c_cancel(7, query_model=StudyRootQueryRetrieveInformationModelFind)
    finally:
        assoc.release()
    return statuses


def test_c_cancel_stops_a_long_find(stack, qr_data):
    """The SCP may have written every match into the socket before the cancel arrives (the client
    reads slower than a loopback socket buffers, more so on a busy machine); then it ends with
    Success, which PS3.7 allows. So try a few times: a cancel that arrives in time must end the
    search with Cancel before every match was sent, and one that does not must leave a full answer."""
    series = str(dcmread(qr_data["toshiba"][0], stop_before_pixels=True).SeriesInstanceUID)
    matches = len(qr_data["toshiba"])
    for _ in range(6):
        statuses = _find_then_cancel(stack, series)
        if statuses[-1] == 0xFE00:
            assert statuses.count(0xFF00) < matches, "the search stopped before every match was sent"
            return
        assert statuses[-1] == 0x0000 and statuses.count(0xFF00) == matches, "too late to cancel: a complete answer"
    pytest.fail("no C-CANCEL in six arrived while the search was still streaming")


def test_tenants_are_walls_for_find(stack, qr_data):
    # pydicom's Russian sample goes only to tenant qr in this suite
    identifier = query("STUDY", PatientID="SCSRUSS", StudyInstanceUID="")
    assert [s for s, _, _ in _find(stack, identifier)] == [0xFF00, 0x0000]
    assert [s for s, _, _ in _find(stack, identifier, aet=QR_OTHER_AE)] == [0x0000], "tenantb sees none of qr's"


@pytest.mark.parametrize(
    ("identifier", "reason"),
    [
        (query("STUDY", Modality="MR"), "series-level"),
        (query("PATIENT", PatientID="DEV"), "no PATIENT level"),
        (query("STUDY", StudyDate="2019-01-01"), "not a date"),
        (query("WARD", PatientID="DEV"), "not one of"),
    ],
)
def test_bad_identifiers_are_refused_with_a_reason(stack, qr_data, identifier, reason):
    ((status, _, comment),) = _find(stack, identifier)
    assert status == 0xA900 and reason in comment, comment


def test_find_needs_the_find_service(stack, qr_data):
    answers = _find(stack, query("STUDY", PatientID="DEV"), aet=MODALITY_AE)
    assert [(s, c) for s, _, c in answers] == [(0x0124, f"{MODALITY_AE} may not use find")]


def test_audit_trail_records_the_query(stack, qr_data):
    marker = f"AUDIT{time.time_ns() % 10**10}"  # this query's own accession number
    _find(stack, query("STUDY", PatientID="SCSRUSS", AccessionNumber=marker, StudyInstanceUID=""))
    import psycopg

    deadline = time.time() + 10
    while time.time() < deadline:
        with psycopg.connect(stack.settings.effective_postgres_dsn()) as conn:
            rows = conn.execute(
                "SELECT subject, tenant, detail FROM audit_event WHERE event_code = 110112"
                " AND detail->'keys'->>'AccessionNumber' = %s",
                (marker,),
            ).fetchall()
        if rows:
            break
        time.sleep(0.5)
    assert rows and rows[0][0] == f"ae:{QR_AE}" and rows[0][1] == "qr"


# -- C-MOVE and C-GET -----------------------------------------------------------------------------


@contextlib.contextmanager
def storescp(port: int, out: Path, accept_all: bool = False, aet: str = STORESCP_AE, log_level: str = "-v") -> Iterator[Path]:
    """dcmtk's storescp, the destination a workstation names in C-MOVE; its log counts the C-STOREs
    (-d: and shows each request's command set). By default it accepts only uncompressed transfer syntaxes."""
    out.mkdir(parents=True, exist_ok=True)
    log = out.parent / f"{out.name}.log"
    args = ["storescp", log_level, "+B", "-aet", aet, "-od", str(out), *(["+xa"] if accept_all else []), str(port)]
    with open(log, "w") as sink:
        proc = subprocess.Popen(args, stdout=sink, stderr=subprocess.STDOUT)
    try:
        time.sleep(0.5)
        yield log
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def received(out: Path) -> dict[str, Dataset]:
    return {str(ds.SOPInstanceUID): ds for ds in (dcmread(p) for p in out.iterdir() if p.is_file())}


def movescu(stack, *keys: str, destination: str = STORESCP_AE) -> subprocess.CompletedProcess:
    s = stack.settings
    args = ["movescu", "-v", "-S", "-aet", QR_AE, "-aec", s.dimse.ae_title, "-aem", destination]
    for key in keys:
        args += ["-k", key]
    return dcmtk(*args, "127.0.0.1", str(s.dimse.port))


def test_movescu_to_storescp_decompresses_what_it_does_not_accept(stack, qr_data, storescp_port, tmp_path):
    study = str(dcmread(qr_data["ts"][0], stop_before_pixels=True).StudyInstanceUID)
    with storescp(storescp_port, tmp_path / "in"):
        result = movescu(stack, "QueryRetrieveLevel=STUDY", f"StudyInstanceUID={study}")
    assert result.returncode == 0, result.stderr
    got = received(tmp_path / "in")
    assert set(got) == sop_uids(qr_data["ts"]), result.stdout + result.stderr
    assert {str(ds.file_meta.TransferSyntaxUID) for ds in got.values()} <= {
        "1.2.840.10008.1.2",
        "1.2.840.10008.1.2.1",
        "1.2.840.10008.1.2.2",
    }
    original = dcmread(qr_data["ts"][0])  # the same pixels after decompression (lossless syntaxes only)
    for ds in got.values():
        assert (ds.pixel_array == original.pixel_array).all()
    # the move is a workflow an operator can find in the Temporal UI
    ids = run(list_ids(stack.settings, "WorkflowType = 'RetrieveWorkflow'"))
    assert any(i.startswith("move:qr:") for i in ids)


def stored_datasets(stack, tenant: str) -> dict[str, bytes]:
    """Each stored object's data set (after its File Meta), as the archive holds it."""
    with psycopg.connect(stack.settings.effective_postgres_dsn()) as conn:
        keys = conn.execute("SELECT sop_uid, blob_key FROM instance WHERE tenant = %s", (tenant,)).fetchall()
    return {sop: dataset_bytes(stack.settings.var_path / "blobs" / key)[1] for sop, key in keys}


def dataset_bytes(path: Path) -> tuple[str, bytes]:
    data = path.read_bytes()
    layout = read_layout(data[:HEAD_BYTES])
    assert layout is not None, path
    return layout.sop_instance_uid, data[layout.dataset_offset :]


def test_move_to_a_destination_that_accepts_everything_keeps_the_stored_syntax(stack, qr_data, storescp_port, tmp_path):
    """Objects go as stored, byte for byte, and each C-STORE names the AE that asked for the move."""
    study = str(dcmread(qr_data["ts"][0], stop_before_pixels=True).StudyInstanceUID)
    with storescp(storescp_port, tmp_path / "in", accept_all=True, log_level="-d") as log:
        result = movescu(stack, "QueryRetrieveLevel=STUDY", f"StudyInstanceUID={study}")
    assert result.returncode == 0, result.stderr
    stored = {str(d.SOPInstanceUID): str(d.file_meta.TransferSyntaxUID) for d in map(dcmread, qr_data["ts"])}
    got = {sop: str(ds.file_meta.TransferSyntaxUID) for sop, ds in received(tmp_path / "in").items()}
    compressed = {s for s, ts in stored.items() if pydicom.uid.UID(ts).is_compressed}
    assert {s: got[s] for s in compressed} == {s: stored[s] for s in compressed}
    archived = stored_datasets(stack, "qr")
    arrived = dict(dataset_bytes(p) for p in (tmp_path / "in").iterdir())
    as_stored = [s for s in arrived if got[s] == stored[s]]
    assert len(as_stored) >= len(compressed) and all(arrived[s] == archived[s] for s in as_stored)
    originators = re.findall(r"Move Originator AE Title\s*:\s*(\S+)", log.read_text())
    assert originators and set(originators) == {QR_AE}, originators


def _move_responses(stack, identifier: Dataset, destination: str) -> list[Dataset]:
    ae = AE(ae_title=QR_AE)
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelMove)
    assoc = ae.associate("127.0.0.1", stack.settings.dimse.port, ae_title=stack.settings.dimse.ae_title)
    assert assoc.is_established
    try:
        return [s for s, _ in assoc.send_c_move(identifier, destination, StudyRootQueryRetrieveInformationModelMove)]
    finally:
        assoc.release()


def _move(stack, identifier: Dataset, destination: str) -> list[int]:
    return [s.Status for s in _move_responses(stack, identifier, destination)]


def test_move_reports_sub_operation_counts(stack, qr_data, storescp_port, tmp_path):
    study = str(dcmread(qr_data["nih"][0], stop_before_pixels=True).StudyInstanceUID)
    with storescp(storescp_port, tmp_path / "in"):
        responses = _move_responses(stack, query("STUDY", StudyInstanceUID=study), STORESCP_AE)
    final = responses[-1]
    assert (final.Status, final.NumberOfCompletedSuboperations, final.NumberOfFailedSuboperations) == (0, 8, 0)
    pending = [r for r in responses[:-1] if r.Status == 0xFF00]
    assert all(r.NumberOfRemainingSuboperations + r.NumberOfCompletedSuboperations == 8 for r in pending)
    assert len(received(tmp_path / "in")) == 8


def test_move_to_an_unknown_or_foreign_destination_is_refused(stack, qr_data):
    study = str(dcmread(qr_data["nih"][0], stop_before_pixels=True).StudyInstanceUID)
    assert _move(stack, query("STUDY", StudyInstanceUID=study), "NOBODY") == [0xA801]
    assert _move(stack, query("STUDY", StudyInstanceUID=study), STORESCP_B_AE) == [0xA801]
    assert _move(stack, query("STUDY", StudyInstanceUID="*"), STORESCP_AE) == [0xA900]


def test_move_to_a_destination_that_is_down_ends_with_every_instance_failed(stack, qr_data, storescp_port):
    """Nothing listens at STORESCP's address: each attempt fails to associate (the acknowledgement
    connection opened beside it is closed), Temporal retries with backoff, then what is owed is
    counted as failed and the requester gets its final answer (A702: none could be sent)."""
    study = str(dcmread(qr_data["nih"][0], stop_before_pixels=True).StudyInstanceUID)
    final = _move_responses(stack, query("STUDY", StudyInstanceUID=study), STORESCP_AE)[-1]
    assert (final.Status, final.NumberOfCompletedSuboperations, final.NumberOfFailedSuboperations) == (0xA702, 0, 8)


def test_move_of_nothing_succeeds_at_once(stack, qr_data):
    assert _move(stack, query("STUDY", StudyInstanceUID="1.2.3.4.5.6.7.8.9"), STORESCP_AE) == [0x0000]


def worker_pids(stack) -> list[int]:
    import psutil

    pids = []
    for process in stack.descendants():
        try:
            if "WorkflowWorkerActor" in " ".join(process.cmdline()):
                pids.append(process.pid)
        except psutil.NoSuchProcess:  # a short-lived child that ended between listing and reading
            continue
    return pids


def test_killed_worker_during_move_still_delivers_every_instance_once(stack, qr_data, storescp_port, tmp_path):
    series = str(dcmread(qr_data["toshiba"][0], stop_before_pixels=True).SeriesInstanceUID)
    study = str(dcmread(qr_data["toshiba"][0], stop_before_pixels=True).StudyInstanceUID)
    with storescp(storescp_port, tmp_path / "in") as log:
        s = stack.settings
        args = [
            "movescu",
            "-v",
            "-S",
            "-aet",
            QR_AE,
            "-aec",
            s.dimse.ae_title,
            "-aem",
            STORESCP_AE,
            "-k",
            "QueryRetrieveLevel=SERIES",
            "-k",
            f"StudyInstanceUID={study}",
            "-k",
            f"SeriesInstanceUID={series}",
            "127.0.0.1",
            str(s.dimse.port),
        ]
        mover = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        deadline = time.time() + 120
        while len(list((tmp_path / "in").iterdir())) < 50 and time.time() < deadline:
            time.sleep(0.05)
        at_kill = len(list((tmp_path / "in").iterdir()))
        before = worker_pids(stack)
        for pid in before:
            os.kill(pid, signal.SIGKILL)  # mid-series: the rest can only go from the restarted worker
        output, _ = mover.communicate(timeout=300)
        stores = len(re.findall(r"Received Store Request", log.read_text()))
    assert mover.returncode == 0, output
    assert at_kill < len(qr_data["toshiba"]), "the worker died while the move was under way"
    got = received(tmp_path / "in")
    assert set(got) == sop_uids(qr_data["toshiba"]), f"{len(got)} of {len(qr_data['toshiba'])} delivered"
    # acknowledged instances are not sent again; at most the one in flight when the worker died is
    assert stores <= len(qr_data["toshiba"]) + 1, f"{stores} C-STOREs for {len(got)} instances"
    assert set(worker_pids(stack)).isdisjoint(before), "Ray restarted the worker"


def test_getscu_retrieves_a_series_on_its_own_association(stack, qr_data, tmp_path):
    first = dcmread(qr_data["nih"][0], stop_before_pixels=True)
    s = stack.settings
    out = tmp_path / "got"
    out.mkdir()
    result = dcmtk(
        "getscu",
        "-v",
        "-S",
        "+B",
        "-aet",
        QR_AE,
        "-aec",
        s.dimse.ae_title,
        "-od",
        str(out),  # +B: written as received
        "-k",
        "QueryRetrieveLevel=SERIES",
        "-k",
        f"StudyInstanceUID={first.StudyInstanceUID}",
        "-k",
        f"SeriesInstanceUID={first.SeriesInstanceUID}",
        "127.0.0.1",
        str(s.dimse.port),
    )
    assert result.returncode == 0, result.stderr
    expected = {str(d.SOPInstanceUID) for d in map(dcmread, qr_data["nih"]) if d.SeriesInstanceUID == first.SeriesInstanceUID}
    assert set(received(out)) == expected
    archived = stored_datasets(stack, "qr")  # as stored, byte for byte
    assert all(archived[sop] == data for sop, data in map(dataset_bytes, out.iterdir()))


def test_c_cancel_stops_a_c_get_between_sub_operations(stack, qr_data):
    """A requester that cancels after 20 of the 520-instance series gets Cancel with the counts, and no more objects."""
    first = dcmread(qr_data["toshiba"][0], stop_before_pixels=True)
    ae = AE(ae_title=QR_AE)
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelGet)
    ae.add_requested_context(first.SOPClassUID, [str(first.file_meta.TransferSyntaxUID), ExplicitVRLittleEndian])
    stored: list[str] = []

    def on_store(event) -> int:
        stored.append(str(event.request.AffectedSOPInstanceUID))
        if len(stored) == 20:
            get_cx = next(
                cx for cx in event.assoc.accepted_contexts if cx.abstract_syntax == StudyRootQueryRetrieveInformationModelGet
            )
            event.assoc.send_c_cancel(1, get_cx.context_id)
        return 0

    assoc = ae.associate(
        "127.0.0.1",
        stack.settings.dimse.port,
        ae_title=stack.settings.dimse.ae_title,
        ext_neg=[build_role(first.SOPClassUID, scp_role=True)],
        evt_handlers=[(evt.EVT_C_STORE, on_store)],
    )
    assert assoc.is_established
    try:
        identifier = query("SERIES", StudyInstanceUID=str(first.StudyInstanceUID), SeriesInstanceUID=str(first.SeriesInstanceUID))
        responses = [status for status, _ in assoc.send_c_get(identifier, StudyRootQueryRetrieveInformationModelGet, msg_id=1)]
    finally:
        assoc.release()
    final, pending = responses[-1], [r for r in responses[:-1] if r.Status == 0xFF00]
    assert final.Status == 0xFE00, final
    assert pending and all(
        r.NumberOfRemainingSuboperations + r.NumberOfCompletedSuboperations == len(qr_data["toshiba"]) for r in pending
    )
    assert 20 <= len(stored) < len(qr_data["toshiba"]) / 2, len(stored)
    assert final.NumberOfCompletedSuboperations == len(stored)
    assert final.NumberOfRemainingSuboperations == len(qr_data["toshiba"]) - len(stored)


def test_patient_root_find_model_is_offered(stack, qr_data):
    answers = _find(
        stack, query("PATIENT", PatientID="crlab", PatientName=""), model=PatientRootQueryRetrieveInformationModelFind
    )
    assert [str(ds.PatientName) for s, ds, _ in answers if s == 0xFF00] == ["stc_test"]


def test_getscu_of_compressed_objects_gets_them_decompressed(stack, qr_data, tmp_path):
    """getscu offers to receive uncompressed syntaxes only; the JPEG, JPEG-LS, J2K and RLE copies come decoded."""
    study = dcmread(qr_data["ts"][0], stop_before_pixels=True).StudyInstanceUID
    s = stack.settings
    out = tmp_path / "got"
    out.mkdir()
    result = dcmtk(
        "getscu",
        "-v",
        "-S",
        "-aet",
        QR_AE,
        "-aec",
        s.dimse.ae_title,
        "-od",
        str(out),
        "-k",
        "QueryRetrieveLevel=STUDY",
        "-k",
        f"StudyInstanceUID={study}",
        "127.0.0.1",
        str(s.dimse.port),
    )
    assert result.returncode == 0, result.stderr
    got = received(out)
    assert set(got) == sop_uids(qr_data["ts"]), result.stdout + result.stderr
    assert not any(pydicom.uid.UID(ds.file_meta.TransferSyntaxUID).is_compressed for ds in got.values())
    original = dcmread(qr_data["ts"][0])  # big endian and compressed copies alike: the same pixels
    assert all((ds.pixel_array == original.pixel_array).all() for ds in got.values())


def test_move_histories_replay_in_the_sandbox_on_both_sending_paths(stack, qr_data):
    """Small moves send in a local activity, large ones (the 520-instance move above) in an activity
    that heartbeats: Temporal's sandboxed Replayer re-runs every move's real history, so a change to
    the workflow that would break the moves in flight (or any non-determinism) fails here."""
    from temporalio.api.enums.v1 import EventType
    from temporalio.worker import Replayer

    from testkit.temporal_waits import client_for
    from workflows.retrieve import RetrieveWorkflow

    async def replay() -> set[str]:
        client = await client_for(stack.settings)
        ids = [w.id async for w in client.list_workflows("WorkflowType = 'RetrieveWorkflow' AND ExecutionStatus = 'Completed'")]
        paths = set()
        for wid in ids:
            history = await client.get_workflow_handle(wid).fetch_history()
            await Replayer(workflows=[RetrieveWorkflow]).replay_workflow(history)  # raises on any mismatch
            kinds = {e.event_type for e in history.events}
            paths.add("activity" if EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED in kinds else "local")
        return paths

    assert run(replay()) == {"activity", "local"}


def test_a_retrieve_workflow_started_from_outside_sends_nothing(stack, qr_data):
    """Issue 27 item 1: anyone who reached Temporal could start a RetrieveWorkflow naming any
    tenant and destination. The send step re-checks what the SCP recorded and refuses."""
    import uuid

    from temporalio.client import WorkflowFailureError

    from contract import names
    from contract.payloads import RetrieveRequest
    from testkit.temporal_waits import client_for

    forged = RetrieveRequest("qr", uuid.uuid4().hex, STORESCP_B_AE, "INTRUDER", 1, instances=1)

    async def start_and_read() -> str:
        client = await client_for(stack.settings)
        handle = await client.start_workflow(
            names.RETRIEVE_WORKFLOW,
            forged,
            id=names.retrieve_workflow_id("qr", forged.retrieve_id),
            task_queue=stack.settings.temporal.task_queue,
        )
        with contextlib.suppress(WorkflowFailureError):
            await handle.result()
        return str([e for e in (await handle.fetch_history()).events])

    history = run(start_and_read())
    assert "was not recorded for tenant" in history and "nothing is sent" in history
