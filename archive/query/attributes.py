"""The attributes QIDO-RS and C-FIND can match and return, per level, and the index columns behind them."""

from __future__ import annotations

from dataclasses import dataclass

from pydicom.datadict import keyword_for_tag, tag_for_keyword

from archive.index.instance_state import served


@dataclass(frozen=True)
class Attribute:
    tag: str  # "0020000D"
    keyword: str
    vr: str
    level: str  # patient | study | series | instance
    column: str  # SQL expression over the level's table alias
    kind: str  # uid | text | pn | date | time | int | code_list
    within: str | None = None  # the sequence whose item holds it (worklist keys)


def _a(keyword: str, vr: str, level: str, column: str, kind: str, within: str | None = None) -> Attribute:
    return Attribute(f"{tag_for_keyword(keyword):08X}", keyword, vr, level, column, kind, within)


# live counts over the patient's studies (patient ID and issuer, within the tenant)
_OF_PATIENT = "c.tenant = st.tenant AND c.patient_id = st.patient_id AND c.issuer = st.issuer"
_PATIENT_STUDIES = f"(SELECT count(*) FROM study c WHERE {_OF_PATIENT})"
_PATIENT_SERIES = (
    f"(SELECT count(*) FROM study c JOIN series cs ON cs.tenant = c.tenant AND cs.study_uid = c.study_uid WHERE {_OF_PATIENT})"
)
_PATIENT_INSTANCES = (
    f"(SELECT count(*) FROM study c JOIN instance ci ON ci.tenant = c.tenant AND ci.study_uid = c.study_uid"
    f" WHERE {_OF_PATIENT} AND {served('ci')})"
)

ATTRIBUTES: list[Attribute] = [
    # patient (the study table's copy of them, alias st: a patient is known by its studies)
    _a("PatientName", "PN", "patient", "st.patient_name", "pn"),
    _a("PatientID", "LO", "patient", "st.patient_id", "text"),
    _a("IssuerOfPatientID", "LO", "patient", "st.issuer", "text"),
    _a("PatientBirthDate", "DA", "patient", "st.patient_birth_date", "date"),
    _a("PatientSex", "CS", "patient", "st.patient_sex", "text"),
    _a("NumberOfPatientRelatedStudies", "IS", "patient", _PATIENT_STUDIES, "int"),
    _a("NumberOfPatientRelatedSeries", "IS", "patient", _PATIENT_SERIES, "int"),
    _a("NumberOfPatientRelatedInstances", "IS", "patient", _PATIENT_INSTANCES, "int"),
    # study (alias st)
    _a("StudyInstanceUID", "UI", "study", "st.study_uid", "uid"),
    _a("StudyDate", "DA", "study", "st.study_date", "date"),
    _a("StudyTime", "TM", "study", "st.study_time", "time"),
    _a("AccessionNumber", "SH", "study", "st.accession_number", "text"),
    _a("ModalitiesInStudy", "CS", "study", "st.modalities", "code_list"),
    _a("ReferringPhysicianName", "PN", "study", "st.referring_physician", "pn"),
    _a("StudyID", "SH", "study", "st.study_id", "text"),
    _a("StudyDescription", "LO", "study", "st.study_description", "text"),
    _a("NumberOfStudyRelatedSeries", "IS", "study", "st.num_series", "int"),
    _a("NumberOfStudyRelatedInstances", "IS", "study", "st.num_instances", "int"),
    _a("SOPClassesInStudy", "UI", "study", "st.sop_classes", "code_list"),
    # the newest MPPS the modality reported for the study
    _a(
        "PerformedProcedureStepStatus",
        "CS",
        "study",
        "(SELECT p.status FROM performed_step p WHERE p.tenant = st.tenant"
        " AND p.study_uid = st.study_uid ORDER BY p.updated_at DESC LIMIT 1)",
        "text",
    ),
    # series (alias se)
    _a("SeriesInstanceUID", "UI", "series", "se.series_uid", "uid"),
    _a("Modality", "CS", "series", "se.modality", "text"),
    _a("SeriesNumber", "IS", "series", "se.series_number", "int"),
    _a("SeriesDescription", "LO", "series", "se.series_description", "text"),
    _a("BodyPartExamined", "CS", "series", "se.body_part", "text"),
    _a("SeriesDate", "DA", "series", "se.series_date", "date"),
    _a("SeriesTime", "TM", "series", "se.series_time", "time"),
    _a("NumberOfSeriesRelatedInstances", "IS", "series", "se.num_instances", "int"),
    # instance (alias i)
    _a("SOPInstanceUID", "UI", "instance", "i.sop_uid", "uid"),
    _a("SOPClassUID", "UI", "instance", "i.sop_class_uid", "uid"),
    _a("InstanceNumber", "IS", "instance", "i.instance_number", "int"),
    _a("Rows", "US", "instance", "i.rows", "int"),
    _a("Columns", "US", "instance", "i.columns", "int"),
    _a("BitsAllocated", "US", "instance", "i.bits_allocated", "int"),
    _a("NumberOfFrames", "IS", "instance", "i.number_of_frames", "int"),
]

BY_TAG = {a.tag: a for a in ATTRIBUTES}
BY_KEYWORD = {a.keyword: a for a in ATTRIBUTES}
LEVELS = ("patient", "study", "series", "instance")

# PS3.18 Table 6.7.1-2: what each level returns by default
DEFAULT_RETURN = {
    "patient": ["PatientName", "PatientID", "PatientBirthDate", "PatientSex"],
    "study": [
        "StudyDate",
        "StudyTime",
        "AccessionNumber",
        "ModalitiesInStudy",
        "ReferringPhysicianName",
        "PatientName",
        "PatientID",
        "PatientBirthDate",
        "PatientSex",
        "StudyInstanceUID",
        "StudyID",
        "StudyDescription",
        "NumberOfStudyRelatedSeries",
        "NumberOfStudyRelatedInstances",
    ],
    "series": [
        "Modality",
        "SeriesDescription",
        "SeriesInstanceUID",
        "SeriesNumber",
        "BodyPartExamined",
        "SeriesDate",
        "SeriesTime",
        "NumberOfSeriesRelatedInstances",
    ],
    "instance": ["SOPClassUID", "SOPInstanceUID", "InstanceNumber", "Rows", "Columns", "BitsAllocated", "NumberOfFrames"],
}


class UnknownAttribute(ValueError):
    pass


def resolve(name: str) -> Attribute:
    """An attribute by keyword or by tag (`0020000D`, `(0020,000D)`); UnknownAttribute if QIDO can't use it."""
    cleaned = name.strip().replace("(", "").replace(")", "").replace(",", "").upper()
    if len(cleaned) == 8 and all(c in "0123456789ABCDEF" for c in cleaned) and cleaned in BY_TAG:
        return BY_TAG[cleaned]
    if name.strip() in BY_KEYWORD:
        return BY_KEYWORD[name.strip()]
    known = keyword_for_tag(int(cleaned, 16)) if len(cleaned) == 8 and all(c in "0123456789ABCDEF" for c in cleaned) else None
    what = f"{name} ({known})" if known else name
    raise UnknownAttribute(
        f"attribute {what} is not supported for matching or return; supported: " + ", ".join(sorted(BY_KEYWORD))
    )


SPS = "ScheduledProcedureStepSequence"
# Modality Worklist (PS3.4 K.6.1.2.2): the matching keys, over the worklist_item table (alias w)
WORKLIST_ATTRIBUTES: list[Attribute] = [
    _a("AccessionNumber", "SH", "worklist", "w.accession_number", "text"),
    _a("PatientName", "PN", "worklist", "w.patient_name", "pn"),
    _a("PatientID", "LO", "worklist", "w.patient_id", "text"),
    _a("PatientBirthDate", "DA", "worklist", "w.patient_birth_date", "date"),
    _a("PatientSex", "CS", "worklist", "w.patient_sex", "text"),
    _a("StudyInstanceUID", "UI", "worklist", "w.study_uid", "uid"),
    _a("RequestedProcedureID", "SH", "worklist", "w.requested_procedure_id", "text"),
    _a("Modality", "CS", "worklist", "w.modality", "text", SPS),
    _a("ScheduledStationAETitle", "AE", "worklist", "w.station_aes", "code_list", SPS),
    _a("ScheduledProcedureStepStartDate", "DA", "worklist", "w.start_date", "date", SPS),
    _a("ScheduledProcedureStepStartTime", "TM", "worklist", "w.start_time", "time", SPS),
    _a("ScheduledPerformingPhysicianName", "PN", "worklist", "w.performing_physician", "pn", SPS),
    _a("ScheduledProcedureStepID", "SH", "worklist", "w.sps_id", "text", SPS),
    _a("ScheduledProcedureStepDescription", "LO", "worklist", "w.sps_description", "text", SPS),
    _a("ScheduledProcedureStepStatus", "CS", "worklist", "w.sps_status", "text", SPS),
]
WORKLIST_BY_TAG = {(a.within, a.tag): a for a in WORKLIST_ATTRIBUTES}

# UPS-RS search (PS3.18 11.9): workitem attributes, over the workitem table (alias u)
WORKITEM_ATTRIBUTES: list[Attribute] = [
    _a("SOPInstanceUID", "UI", "workitem", "u.uid", "uid"),
    _a("ProcedureStepState", "CS", "workitem", "u.state", "text"),
    _a("ProcedureStepLabel", "LO", "workitem", "u.label", "text"),
    _a("WorklistLabel", "LO", "workitem", "u.worklist_label", "text"),
    _a("ScheduledProcedureStepPriority", "CS", "workitem", "u.priority", "text"),
    _a("ScheduledProcedureStepStartDateTime", "DT", "workitem", "u.start_datetime", "datetime"),
    _a("PatientName", "PN", "workitem", "u.patient_name", "pn"),
    _a("PatientID", "LO", "workitem", "u.patient_id", "text"),
]
WORKITEM_BY_KEYWORD = {a.keyword: a for a in WORKITEM_ATTRIBUTES}
