"""C-FIND answers built from pre-encoded values (`answer` given the transfer syntax) put the same bytes
on the wire as answers of ordinary elements that pydicom's writer converts: the oracle below is the
answer as the SCP built it before, verbatim, and both are encoded the way pynetdicom encodes them."""

from __future__ import annotations

import random
from io import BytesIO
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pydicom import dcmread
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pynetdicom.dsutils import decode, encode

from archive.query.attributes import BY_TAG, Attribute
from archive.query.cfind import EncodedAnswer, FindRequest, answer, parse_identifier, set_character_set, skipped

# the character set is chosen by trying the asked one: a text it cannot carry warns, then goes in UTF-8
pytestmark = pytest.mark.filterwarnings("ignore:Failed to encode value")

CHARSETS = Path(pydicom.__file__).parent / "data" / "charset_files"
AE_TITLE = "DICOMFLOW"
STUDY_KEYS = [
    "PatientName",
    "PatientID",
    "IssuerOfPatientID",
    "PatientBirthDate",
    "PatientSex",
    "StudyInstanceUID",
    "StudyDate",
    "StudyTime",
    "AccessionNumber",
    "ModalitiesInStudy",
    "ReferringPhysicianName",
    "StudyID",
    "StudyDescription",
    "NumberOfStudyRelatedSeries",
    "NumberOfStudyRelatedInstances",
    "SOPClassesInStudy",
    "PerformedProcedureStepStatus",
    "InstitutionName",
    "RetrieveAETitle",
    "InstanceAvailability",
]


def _original_set(ds: Dataset, attribute: Attribute, value: Any) -> None:
    if value is None or value == "" or value == []:
        ds.add_new(int(attribute.tag, 16), attribute.vr, None)
    elif isinstance(value, list):
        ds.add_new(int(attribute.tag, 16), attribute.vr, sorted(str(v) for v in value if v is not None))
    elif attribute.vr == "CS" and "\\" in str(value):
        ds.add_new(int(attribute.tag, 16), attribute.vr, str(value).split("\\"))
    else:
        ds.add_new(int(attribute.tag, 16), attribute.vr, str(value))


def original_answer(request: FindRequest, row: tuple, ae_title: str) -> Dataset:
    ds = Dataset()
    values = dict(zip((a.tag for a in request.query.returned), row))
    for element in request.requested:
        tag = f"{int(element.tag):08X}"
        if skipped(element):
            continue
        if tag in values:
            _original_set(ds, BY_TAG[tag], values[tag])
        else:
            ds.add_new(element.tag, element.VR, [] if element.VR == "SQ" else None)
    for attribute in request.query.returned:
        if int(attribute.tag, 16) not in ds:
            _original_set(ds, attribute, values[attribute.tag])
    ds.QueryRetrieveLevel = request.level
    if "RetrieveAETitle" in request.requested:
        ds.RetrieveAETitle = ae_title
    if "InstanceAvailability" in request.requested:
        ds.InstanceAvailability = "ONLINE"
    set_character_set(ds, request.character_set, [str(v) for v in values.values() if isinstance(v, str)])
    return ds


def name_in(file: str) -> str:
    return str(dcmread(CHARSETS / f"{file}.dcm", stop_before_pixels=True).PatientName)


def request_for(level: str, keys: list[str], charset: list[str] | None = None) -> FindRequest:
    ds = Dataset()
    ds.QueryRetrieveLevel = level
    if charset:
        ds.SpecificCharacterSet = charset
    for keyword in keys:
        setattr(ds, keyword, [] if keyword.endswith("Sequence") else None)
    return parse_identifier(ds, "t", "study")


def row_for(request: FindRequest, **values: Any) -> tuple:
    defaults = {
        "PatientName": "Doe^John",
        "PatientID": "PID0001",
        "IssuerOfPatientID": "HOSP",
        "PatientBirthDate": "19700101",
        "PatientSex": "F",
        "StudyInstanceUID": "1.2.826.0.1.3680043.8.498.1",
        "StudyDate": "20190230",
        "StudyTime": "093015.123",
        "AccessionNumber": "ACC1",
        "ModalitiesInStudy": ["MR", "CT"],
        "ReferringPhysicianName": "Smith^Jane",
        "StudyID": "7",
        "StudyDescription": "Brain",
        "NumberOfStudyRelatedSeries": 4,
        "NumberOfStudyRelatedInstances": 123,
        "SOPClassesInStudy": ["1.2.840.10008.5.1.4.1.1.4"],
        "PerformedProcedureStepStatus": None,
        "SeriesInstanceUID": "1.2.3.4",
        "Modality": "MR",
        "SeriesNumber": 3,
        "NumberOfSeriesRelatedInstances": 2,
        "SOPInstanceUID": "1.2.3.4.5",
        "SOPClassUID": "1.2.840.10008.5.1.4.1.1.4",
        "InstanceNumber": 1,
        "Rows": 512,
        "Columns": 256,
        "BitsAllocated": 16,
        "NumberOfFrames": None,
    }
    defaults.update(values)
    return tuple(defaults[a.keyword] for a in request.query.returned)


STUDY_ROWS = {
    "ascii": (None, {}),
    "japanese, ISO 2022 IR 87": (["", "ISO 2022 IR 87"], {"PatientName": name_in("chrH31")}),
    "japanese, ISO 2022 IR 13 and 87": (["ISO 2022 IR 13", "ISO 2022 IR 87"], {"PatientName": name_in("chrH32")}),
    "russian, ISO_IR 144": (["ISO_IR 144"], {"PatientName": name_in("chrRuss"), "StudyDescription": "Головной мозг"}),
    "greek, ISO_IR 126": (["ISO_IR 126"], {"PatientName": name_in("chrGreek")}),
    "greek, asked in ASCII: UTF-8": (None, {"PatientName": name_in("chrGreek")}),
    "greek, asked in Cyrillic: UTF-8": (["ISO_IR 144"], {"PatientName": name_in("chrGreek")}),
    "ascii, asked in Latin-1": (["ISO_IR 100"], {}),
    "chinese, UTF-8": (["ISO_IR 192"], {"PatientName": name_in("chrX1"), "ReferringPhysicianName": "Müller^Jürgen"}),
    "empty values": (
        None,
        {
            "PatientName": "",
            "PatientBirthDate": None,
            "ModalitiesInStudy": [],
            "StudyTime": None,
            "NumberOfStudyRelatedSeries": None,
            "SOPClassesInStudy": [None],
            "StudyDescription": "",
        },
    ),
    "multi-valued and odd lengths": (
        None,
        {
            "ModalitiesInStudy": ["SR", "MR", "CT", "PR"],
            "AccessionNumber": "A1\\B22",
            "StudyInstanceUID": "1.2.3",
            "SOPClassesInStudy": ["1.2.3", "1.2.34"],
            "PatientName": "Doe^John==",
            "ReferringPhysicianName": "A^B\\C^D",
            "NumberOfStudyRelatedInstances": 7,
            "StudyID": " 9 ",
            "PatientSex": "O",
        },
    ),
}


def values_of(ds: Dataset) -> list[tuple]:
    return [(int(e.tag), e.VR, e.value) for e in ds]


def assert_same_on_the_wire(request: FindRequest, row: tuple, implicit: bool) -> Dataset:
    before = encode(original_answer(request, row, AE_TITLE), implicit, True, False)
    ds = answer(request, row, AE_TITLE, implicit_vr=implicit, little_endian=True)
    after = encode(ds, implicit, True, False)
    assert before and after == before
    assert isinstance(ds, EncodedAnswer) and ds.encoded == after, "the bytes made with the answer are pydicom's"
    # the writer copied the values as built: no element was converted (Specific Character Set excepted)
    assert all(isinstance(ds.get_item(tag), RawDataElement) for tag in ds.keys() if tag != 0x00080005)
    decoded = decode(BytesIO(after), implicit, True, False)
    assert values_of(decoded) == values_of(decode(BytesIO(before), implicit, True, False))
    return decoded


@pytest.mark.parametrize("implicit", [True, False], ids=["implicit", "explicit"])
@pytest.mark.parametrize("case", list(STUDY_ROWS))
def test_study_answers_are_the_same_bytes(case, implicit):
    charset, values = STUDY_ROWS[case]
    request = request_for("STUDY", [*STUDY_KEYS, "ReferencedStudySequence"], charset)
    decoded = assert_same_on_the_wire(request, row_for(request, **values), implicit)
    if "PatientName" in values:
        assert str(decoded.PatientName) == values["PatientName"].rstrip("=")
    assert decoded.RetrieveAETitle == AE_TITLE and decoded.InstanceAvailability == "ONLINE"
    assert "ReferencedStudySequence" in decoded and "InstitutionName" in decoded and not decoded.InstitutionName


@pytest.mark.parametrize("implicit", [True, False], ids=["implicit", "explicit"])
def test_series_answers_carry_the_study_uid_unasked(implicit):
    request = request_for("SERIES", ["SeriesInstanceUID", "Modality", "SeriesNumber", "NumberOfSeriesRelatedInstances"])
    decoded = assert_same_on_the_wire(request, row_for(request), implicit)
    assert decoded.StudyInstanceUID == "1.2.826.0.1.3680043.8.498.1" and decoded.SeriesNumber == 3


def test_big_endian_answers_are_built_of_ordinary_elements():
    request = request_for("STUDY", STUDY_KEYS, ["ISO_IR 144"])
    row = row_for(request, PatientName=name_in("chrRuss"))
    ds = answer(request, row, AE_TITLE, implicit_vr=False, little_endian=False)
    assert not any(isinstance(ds.get_item(tag), RawDataElement) for tag in ds.keys())
    assert encode(ds, False, False, False) == encode(original_answer(request, row, AE_TITLE), False, False, False)


@pytest.mark.parametrize(("implicit", "little"), [(True, True), (False, True), (False, False)])
def test_image_answers_carry_binary_numbers(implicit, little):
    """Rows, Columns and BitsAllocated are US: numbers, not the strings the answer once held (which
    pydicom could not write at all)."""
    request = request_for("IMAGE", ["SOPInstanceUID", "InstanceNumber", "Rows", "Columns", "BitsAllocated", "NumberOfFrames"])
    ds = answer(request, row_for(request), AE_TITLE, implicit_vr=implicit, little_endian=little)
    decoded = decode(BytesIO(encode(ds, implicit, little, False)), implicit, little, False)
    assert (decoded.Rows, decoded.Columns, decoded.BitsAllocated, decoded.InstanceNumber) == (512, 256, 16, 1)
    assert decoded.NumberOfFrames is None and decoded.SeriesInstanceUID == "1.2.3.4"


def test_an_ambiguous_vr_asked_for_is_left_to_pydicom():
    request = request_for("IMAGE", ["SOPInstanceUID"])
    request.requested.add_new(0x00280106, "US or SS", None)  # Smallest Image Pixel Value: not in the index
    ds = answer(request, row_for(request), AE_TITLE, implicit_vr=True, little_endian=True)
    assert not isinstance(ds.get_item(0x00080018), RawDataElement)
    assert encode(ds, True, True, False) == encode(original_answer(request, row_for(request), AE_TITLE), True, True, False)


CHARACTERS = "AZaz09 .-^=\\" + "ЖлюДя" + "ΔιονΣ" + "山田太郎やまだたろう" + "ﾔﾏﾀﾞﾀﾛｳ" + "éüß" + "王小東"
TEXT_KEYS = ["PatientName", "PatientID", "ReferringPhysicianName", "StudyDescription", "AccessionNumber", "StudyID"]


@pytest.mark.parametrize(
    "charset",
    [
        None,
        ["ISO_IR 100"],
        ["ISO_IR 144"],
        ["ISO_IR 126"],
        ["", "ISO 2022 IR 87"],
        ["ISO 2022 IR 13", "ISO 2022 IR 87"],
        ["ISO_IR 192"],
        ["", "ISO 2022 IR 149"],
    ],
)
def test_random_texts_are_the_same_bytes(charset):
    rng = random.Random(str(charset))
    request = request_for("STUDY", STUDY_KEYS, charset)
    for _ in range(100):
        values = {key: "".join(rng.choice(CHARACTERS) for _ in range(rng.randint(0, 12))) for key in TEXT_KEYS}
        for implicit in (True, False):
            assert_same_on_the_wire(request, row_for(request, **values), implicit)
