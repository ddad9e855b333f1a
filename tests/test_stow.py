"""STOW-RS with a real client (dicomweb-client) and raw HTTP for the malformed requests."""

from __future__ import annotations

import io
import itertools
import re

import psycopg
import pytest
import requests
from dicomweb_client.api import DICOMwebClient
from pydicom import dcmread
from pydicom.filewriter import dcmwrite
from pydicom.uid import generate_uid

from contract.names import PROCESS_STUDY, STUDY_STEPS
from testkit.temporal_waits import activity_types, study_steps, wait_completed
from tests.auth import auth_headers
from tests.conftest import run

_tenants = itertools.count()


@pytest.fixture
def tenant():
    return f"stow{next(_tenants)}"


def count(settings, tenant: str) -> int:
    with psycopg.connect(settings.effective_postgres_dsn()) as conn:
        return conn.execute("SELECT count(*) FROM instance WHERE tenant = %s", (tenant,)).fetchone()[0]


def multipart(parts: list[bytes], boundary: str, part_type: str = "application/dicom") -> bytes:
    body = b""
    for part in parts:
        body += f"--{boundary}\r\nContent-Type: {part_type}\r\n\r\n".encode() + part + b"\r\n"
    return body + f"--{boundary}--\r\n".encode()


def post(stack, tenant, body: bytes, content_type: str, path="/dicomweb/studies"):
    return requests.post(stack.url(path), data=body, headers={"Content-Type": content_type, **auth_headers(tenant)}, timeout=60)


def test_dicomweb_client_stores_a_real_series(stack, tenant, data_dir):
    files = sorted((data_dir / "dcm_qa_nih").rglob("*.dcm"))
    datasets = [dcmread(p) for p in files]
    client = DICOMwebClient(url=stack.url("/dicomweb"), headers=auth_headers(tenant))
    response = client.store_instances(datasets=datasets)
    referenced = response.ReferencedSOPSequence
    assert {str(i.ReferencedSOPInstanceUID) for i in referenced} == {str(d.SOPInstanceUID) for d in datasets}
    assert all(str(i.RetrieveURL).startswith(stack.url("/dicomweb/studies/")) for i in referenced)
    assert "FailedSOPSequence" not in response
    assert count(stack.settings, tenant) == len(datasets)  # visible as soon as the response arrived
    study = str(datasets[0].StudyInstanceUID)
    from temporalio.client import WorkflowExecutionStatus

    statuses = run(wait_completed(stack.settings, [f"study:{tenant}:{study}"], timeout=120))
    assert statuses == {f"study:{tenant}:{study}": WorkflowExecutionStatus.COMPLETED}
    assert run(study_steps(stack.settings, f"study:{tenant}:{study}")) == list(STUDY_STEPS)
    assert PROCESS_STUDY in run(activity_types(stack.settings, f"study:{tenant}:{study}"))


def test_seed_path_with_tenant_header(stack, tenant, data_dir):
    data = next((data_dir / "dcm_qa_ts").rglob("*.dcm")).read_bytes()
    response = post(
        stack,
        tenant,
        multipart([data], "b1"),
        'multipart/related; type="application/dicom"; boundary=b1',
        path="/stow-rs/v1/studies",
    )
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/dicom+json")
    assert count(stack.settings, tenant) == 1


def _nih(data_dir, n=2) -> list[bytes]:
    return [p.read_bytes() for p in sorted((data_dir / "dcm_qa_nih").rglob("*.dcm"))[:n]]


def test_partial_success_is_202_with_reasons(stack, tenant, data_dir):
    good, other = _nih(data_dir)
    body = multipart([good, other[: len(other) // 3], b"not dicom at all" * 30], "xyz")
    response = post(stack, tenant, body, 'multipart/related; type="application/dicom"; boundary=xyz')
    assert response.status_code == 202, response.text
    result = response.json()
    assert len(result["00081199"]["Value"]) == 1
    reasons = [item["00081197"]["Value"][0] for item in result["00081198"]["Value"]]
    assert reasons == [0xC000, 0xC000]
    assert all(item["00090010"] == {"vr": "LO", "Value": ["dicomflow"]} for item in result["00081198"]["Value"])
    comments = " ".join(reason_text(item) for item in result["00081198"]["Value"])
    assert "truncated" in comments and "not a DICOM" in comments
    assert re.fullmatch(r'299 127\.0\.0\.1:\d+ "2 of 3 instances not stored .*"', response.headers["Warning"])
    assert count(stack.settings, tenant) == 1


def reason_text(item: dict) -> str:
    """The reason in words: dicomflow's private block, creator (0009,0010), element (0009,1001) LT."""
    assert item["00090010"]["Value"] == ["dicomflow"] and item["00091001"]["vr"] == "LT"
    return item["00091001"]["Value"][0]


def _changed(data: bytes) -> bytes:
    ds = dcmread(io.BytesIO(data))
    ds.PatientName = "Someone^Else"
    out = io.BytesIO()
    dcmwrite(out, ds, enforce_file_format=True)
    return out.getvalue()


def test_changed_content_under_a_stored_uid_is_a901(stack, tenant, data_dir):
    """duplicate_policy reject (the default): PS3.4 B.2.3 has no 0111 for C-STORE, so STOW's FailureReason is A901."""
    first, second = _nih(data_dir)
    kind = 'multipart/related; type="application/dicom"; boundary=q'
    assert post(stack, tenant, multipart([first], "q"), kind).status_code == 200
    assert post(stack, tenant, multipart([first], "q"), kind).status_code == 200  # identical resend: nothing changes
    mixed = post(stack, tenant, multipart([_changed(first), second], "q"), kind)
    assert mixed.status_code == 202, mixed.text
    conflict = post(stack, tenant, multipart([_changed(first)], "q"), kind)
    assert conflict.status_code == 409, conflict.text
    (item,) = conflict.json()["00081198"]["Value"]
    assert item["00081197"]["Value"] == [0xA901] and "different content" in reason_text(item)
    assert item["00081155"]["Value"] == [str(dcmread(io.BytesIO(first)).SOPInstanceUID)]
    assert '"1 of 1 instances not stored' in conflict.headers["Warning"]
    assert count(stack.settings, tenant) == 2


def test_nothing_stored_while_the_blob_store_is_down_is_503(stack, tenant, data_dir):
    """The tenant's blob folder made unusable (a file where its directory goes): every commit fails as on
    a lost disk or bucket. Nothing stored for a reason that will pass: 503 and Retry-After, not 409."""
    data = _nih(data_dir, 1)[0]
    kind = 'multipart/related; type="application/dicom"; boundary=q'
    blocker = stack.settings.var_path / "blobs" / tenant
    blocker.write_bytes(b"")
    try:
        down = post(stack, tenant, multipart([data, b"not dicom at all" * 30], "q"), kind)
    finally:
        blocker.unlink()
    assert down.status_code == 503, down.text
    assert down.headers["Retry-After"] == "30"
    reasons = [item["00081197"]["Value"][0] for item in down.json()["00081198"]["Value"]]
    assert reasons == [0xA700, 0xC000]
    assert count(stack.settings, tenant) == 0  # the index row went back with the failed blob
    again = post(stack, tenant, multipart([data], "q"), kind)  # as a client does after Retry-After
    assert again.status_code == 200, again.text
    assert count(stack.settings, tenant) == 1


def test_nothing_stored_is_409(stack, tenant, data_dir):
    ds = dcmread(io.BytesIO(_nih(data_dir, 1)[0]))
    del ds.StudyInstanceUID
    out = io.BytesIO()
    dcmwrite(out, ds, enforce_file_format=True)
    response = post(stack, tenant, multipart([out.getvalue()], "q"), 'multipart/related; type="application/dicom"; boundary=q')
    assert response.status_code == 409
    assert "StudyInstanceUID is missing" in response.text
    assert count(stack.settings, tenant) == 0


def test_unsafe_uid_is_refused(stack, tenant, data_dir):
    ds = dcmread(io.BytesIO(_nih(data_dir, 1)[0]))
    ds.SeriesInstanceUID = "1.2.3/../abc"
    out = io.BytesIO()
    dcmwrite(out, ds, enforce_file_format=True)
    response = post(stack, tenant, multipart([out.getvalue()], "q"), 'multipart/related; type="application/dicom"; boundary=q')
    assert response.status_code == 409 and "not a valid UID" in response.text
    assert count(stack.settings, tenant) == 0


def test_nonconformant_but_harmless_study_uid_is_kept_and_found(stack, tenant, data_dir):
    """uid_policy lenient (the default): a 64-hex-digit Study Instance UID, as a real device wrote it,
    is stored, read back and found by QIDO, instead of leaving the study in the modality's queue."""
    ds = dcmread(io.BytesIO(_nih(data_dir, 1)[0]))
    study = "9f2c" * 16
    ds.StudyInstanceUID = study
    out = io.BytesIO()
    dcmwrite(out, ds, enforce_file_format=True)
    response = post(stack, tenant, multipart([out.getvalue()], "q"), 'multipart/related; type="application/dicom"; boundary=q')
    assert response.status_code == 200, response.text
    found = requests.get(
        stack.url("/dicomweb/studies"), params={"StudyInstanceUID": study}, headers=auth_headers(tenant), timeout=30
    )
    assert [s["0020000D"]["Value"][0] for s in found.json()] == [study]
    back = requests.get(stack.url(f"/dicomweb/studies/{study}/metadata"), headers=auth_headers(tenant), timeout=30)
    assert back.status_code == 200, back.text
    assert back.json()[0].get("0020000D", {}).get("Value") == [study], sorted(back.json()[0])[:20]


def test_instance_of_another_study_than_the_path(stack, tenant, data_dir):
    data = _nih(data_dir, 1)[0]
    other_study = generate_uid()
    response = post(
        stack,
        tenant,
        multipart([data], "q"),
        'multipart/related; type="application/dicom"; boundary=q',
        path=f"/dicomweb/studies/{other_study}",
    )
    assert response.status_code == 409
    assert response.json()["00081198"]["Value"][0]["00081197"]["Value"] == [0xA900]
    assert count(stack.settings, tenant) == 0


@pytest.mark.parametrize(
    "content_type, status, words",
    [
        ("application/json", 415, "multipart/related"),
        ('multipart/related; type="application/dicom+json"; boundary=q', 415, "application/dicom+json"),
        ('multipart/related; type="application/dicom"', 400, "boundary"),
    ],
)
def test_wrong_media_type_or_no_boundary(stack, tenant, data_dir, content_type, status, words):
    response = post(stack, tenant, multipart(_nih(data_dir, 1), "q"), content_type)
    assert response.status_code == status and words in response.text
    assert count(stack.settings, tenant) == 0


def test_body_without_closing_boundary_is_400(stack, tenant, data_dir):
    body = multipart(_nih(data_dir, 1), "q")
    response = post(stack, tenant, body[:-8], 'multipart/related; type="application/dicom"; boundary=q')
    assert response.status_code == 400 and "boundary" in response.text
    assert count(stack.settings, tenant) == 0


def test_bad_tenant_header_is_400(stack, data_dir):
    response = post(
        stack, "../../etc", multipart(_nih(data_dir, 1), "q"), 'multipart/related; type="application/dicom"; boundary=q'
    )
    assert response.status_code == 400 and "tenant" in response.text


def test_oversized_body_is_413(stack, tenant):
    size = stack.settings.web.stow_max_bytes + 1
    response = requests.post(
        stack.url("/dicomweb/studies"),
        data=b"",
        headers={
            "Content-Type": 'multipart/related; type="application/dicom"; boundary=q',
            "Content-Length": str(size),
            **auth_headers(tenant),
        },
        timeout=30,
    )
    assert response.status_code == 413 and "stow_max_bytes" in response.text
