"""The parts of `dicomflow migrate` that need no stack: the days walked, the migration's name, what
is asked of the source and read from its answers, and which AE-table entries may be migrated from."""

from __future__ import annotations

from pydicom.dataset import Dataset

from archive.config.settings import Settings
from archive.migration.source_check import migration_tenant, source_refusal
from archive.migration.source_queries import HOURS, count_of, found_study, modalities_of, study_query
from contract import names
from contract.payloads import day_before


def test_days_step_back_across_months_and_leap_years():
    assert day_before("20240301") == "20240229"
    assert day_before("20230101") == "20221231"


def test_the_same_command_names_the_same_migration():
    assert names.migration_key("t", "PACS", "20200101", "20201231", ["MR", "CT"]) == "t:PACS:20200101-20201231:CT+MR"
    assert names.migration_workflow_id(names.migration_key("t", "PACS", "1", "2", [])) == "migrate:t:PACS:1-2"


def test_a_day_is_asked_whole_or_hour_by_hour():
    assert study_query("20190301").StudyDate == "20190301"
    assert study_query("20190301", "CT", HOURS[13]).StudyTime == "130000-135959"
    assert len(HOURS) == 24 and HOURS[-1] == ("230000", "235959")


def test_answers_without_optional_keys_read_as_unknown():
    answer = Dataset()
    answer.StudyInstanceUID = "1.2.3"
    answer.NumberOfStudyRelatedInstances = ""
    assert found_study(answer).expected is None and modalities_of(answer) == set()
    answer.NumberOfStudyRelatedInstances = 12
    answer.ModalitiesInStudy = ["CT", "SR"]
    assert found_study(answer).expected == 12 and modalities_of(answer) == {"CT", "SR"}
    assert count_of(Dataset(), "NumberOfSeriesRelatedInstances") is None


def test_a_source_must_be_reachable_and_allowed_to_store():
    settings = Settings(
        ae_table={
            "PACS": {"host": "10.0.0.5", "port": 104, "tenant": "old", "services": ["store"]},
            "NOADDR": {"services": ["store"]},
            "NOSTORE": {"host": "10.0.0.6", "port": 104, "services": ["find"]},
            "ELSEWHERE": {"host": "10.0.0.7", "port": 104, "services": ["store"], "allowed_hosts": ["10.1.0.0/16"]},
        }
    )
    assert source_refusal(settings.dimse, "PACS") is None and migration_tenant(settings, "PACS") == "old"
    assert "not in the AE table" in (source_refusal(settings.dimse, "GONE") or "")
    assert "no host and port" in (source_refusal(settings.dimse, "NOADDR") or "")
    assert 'does not allow "store"' in (source_refusal(settings.dimse, "NOSTORE") or "")
    assert "allowed_hosts" in (source_refusal(settings.dimse, "ELSEWHERE") or "")
