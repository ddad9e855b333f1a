"""Pure rules behind C-FIND, retrieve, MWL, UPS and MPPS, on real files where a file matters; no stack."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from archive.config.settings import Settings
from archive.dicom.uids import is_safe_uid, lenient_uid_problem
from archive.pixels.decode_pool import DecodePool
from archive.query.builder import BadQuery
from archive.query.cfind import character_set, parse_identifier
from archive.query.qido import build_qido
from archive.query.retrieve import retrieve_keys
from archive.services.mpps import StepRefused, changed, started
from archive.services.outbound import NoCommonSyntax, dataset_to_send
from archive.services.ups import WorkitemRefused, changed_state, new_workitem

DATA = (
    Path("/work/shared/data") if Path("/work/shared/data").exists() else Path(__file__).resolve().parents[3] / "shared" / "data"
)
TS = DATA / "dcm_qa_ts" / "In"


def identifier(level: str, **keys: str) -> Dataset:
    ds = Dataset()
    ds.QueryRetrieveLevel = level
    for keyword, value in keys.items():
        setattr(ds, keyword, value)
    return ds


def test_answers_keep_the_askers_character_set_only_when_it_can_carry_them():
    assert character_set(["", "ISO 2022 IR 87"], ["Yamada^Tarou=山田^太郎=やまだ^たろう"]) == ["", "ISO 2022 IR 87"]
    assert character_set(["ISO_IR 144"], ["Διονυσιος"]) == ["ISO_IR 192"]  # Greek is not in Cyrillic
    assert character_set([], ["Müller"]) == ["ISO_IR 192"]
    assert character_set([], ["Smith"]) is None


@pytest.mark.parametrize(
    ("ds", "model", "words"),
    [
        (identifier("STUDY", Modality="MR"), "study", "series-level"),
        (identifier("PATIENT"), "study", "no PATIENT level"),
        (identifier("IMAGE", StudyDate="20200101-20190101x"), "study", "not a date"),
        (Dataset(), "study", "missing"),
    ],
)
def test_identifiers_that_cannot_be_answered(ds, model, words):
    with pytest.raises(BadQuery, match=words):
        parse_identifier(ds, "t", model)


def test_relational_keys_from_levels_above_are_matched():
    query = parse_identifier(identifier("SERIES", PatientName="doe*", StudyDate="20200101-", Modality="CT"), "t", "study").query
    # the studies of that name, found from the name indexes (builder._name_first), then their series
    assert "st.ctid = ANY(ARRAY(SELECT p.ctid FROM study p" in query.sql
    assert "lower(split_part(p.patient_name, '=', 1)) LIKE" in query.sql and "se.modality = %s" in query.sql


def test_a_retrieve_must_name_something_definite():
    with pytest.raises(BadQuery, match="needs StudyInstanceUID"):
        retrieve_keys(identifier("STUDY", StudyInstanceUID="*"), "study")
    keys = retrieve_keys(identifier("SERIES", StudyInstanceUID="1.2", SeriesInstanceUID="1.2.3\\1.2.4"), "study")
    assert {k.attribute.keyword: k.value for k in keys} == {"SeriesInstanceUID": "1.2.3\\1.2.4", "StudyInstanceUID": "1.2"}


def test_outbound_conversion_keeps_the_pixels(tmp_path):
    reference = dcmread(TS / "1.dcm").pixel_array
    with DecodePool(Settings().decode.pool_limits) as pool:
        for name, stored in (("3.dcm", "1.2.840.10008.1.2.2"), ("9.dcm", "1.2.840.10008.1.2.4.90")):
            ds = dataset_to_send(TS / name, stored, {"1.2.840.10008.1.2.1"}, pool, tmp_path)
            assert str(ds.file_meta.TransferSyntaxUID) == "1.2.840.10008.1.2.1" and ds.original_encoding == (False, True)
            assert (ds.pixel_array == reference).all(), name
            assert ds.SOPInstanceUID == dcmread(TS / name, stop_before_pixels=True).SOPInstanceUID
        with pytest.raises(NoCommonSyntax):
            dataset_to_send(TS / "9.dcm", "1.2.840.10008.1.2.4.90", {"1.2.840.10008.1.2.4.50"}, pool, tmp_path)
    assert not list(tmp_path.iterdir()), "the decompressed scratch copies are removed"


def test_workitem_states():
    ds = Dataset()
    ds.ProcedureStepLabel, ds.ScheduledProcedureStepStartDateTime = "CT head", "20261123090000"
    uid = generate_uid()
    assert new_workitem(ds, uid).state == "SCHEDULED"
    claim = generate_uid()
    assert changed_state(ds, uid, "IN PROGRESS", claim, None).state == "IN PROGRESS"
    with pytest.raises(WorkitemRefused, match="not the one that claimed"):
        changed_state(ds, uid, "COMPLETED", generate_uid(), claim)
    assert changed_state(ds, uid, "COMPLETED", claim, claim).state == "COMPLETED"
    with pytest.raises(WorkitemRefused, match="COMPLETED; it cannot become"):
        changed_state(ds, uid, "CANCELED", claim, claim)


def test_performed_procedure_step_states():
    ds = Dataset()
    ds.PerformedProcedureStepStatus = "IN PROGRESS"
    assert started(ds).status == "IN PROGRESS"
    done = Dataset()
    done.PerformedProcedureStepStatus = "COMPLETED"
    assert changed(ds, done).status == "COMPLETED"
    with pytest.raises(StepRefused) as refused:
        changed(ds, done)
    assert refused.value.status == 0x0110
    wrong = Dataset()
    wrong.PerformedProcedureStepStatus = "COMPLETED"
    with pytest.raises(StepRefused):
        started(wrong)


@pytest.mark.parametrize(
    ("value", "stored"),
    [
        ("1.2.840.10008.1.2", True),
        ("a3f1" * 16, True),
        ("1.02.3", True),
        ("../x", False),
        ("1.2/3", False),
        ("1" * 65, False),
        ("1.2 3", False),
        ("", False),
    ],
)
def test_lenient_uids(value, stored):
    refusal, _ = lenient_uid_problem("StudyInstanceUID", value)
    assert (refusal is None) is stored and is_safe_uid(value) is (stored and bool(value))


def test_only_a_name_the_name_indexes_answer_is_looked_up_first():
    """Per-group PN matches go through the indexes by row address; a fuzzy name or one naming its
    own component groups has no index to use and stays a plain filter; other levels are untouched."""

    def sql(level: str, **params: str) -> str:
        return build_qido(level, "t", {k: [v] for k, v in params.items()}).sql

    fenced = "st.ctid = ANY(ARRAY(SELECT p.ctid FROM study p"
    assert fenced in sql("study", PatientName="doe*") and fenced in sql("instance", PatientName="Doe^John")
    assert fenced not in sql("study", PatientName="doe", fuzzymatching="true")
    assert fenced not in sql("study", PatientName="Yamada^Tarou=山田^太郎")
    assert fenced not in sql("study", PatientName="*")
    patients = parse_identifier(identifier("PATIENT", PatientName="doe*"), "t", "patient").query.sql
    assert fenced not in patients and "lower(split_part(st.patient_name, '=', 1)) LIKE" in patients


def test_the_index_constraint_lists_exactly_the_instance_states() -> None:
    from archive.index.instance_state import check_constraint_sql
    from archive.index.schema import MIGRATIONS

    newest = [m for m in MIGRATIONS if "ADD CONSTRAINT instance_state_known" in m][-1]
    assert check_constraint_sql() in newest and "'rejected'" in newest
