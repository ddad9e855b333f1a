"""Hostile input over STOW-RS and C-STORE: mutated real files (fixed seed, a CI-sized budget; `make
fuzz` runs more) and the known attacks. Every object gets a 4xx-class answer or is stored; never a
5xx, never a crash, and the archive keeps storing good files afterwards."""

from __future__ import annotations

import io
import os
import uuid
from pathlib import Path

import pytest
import requests
from pydicom import dcmread
from pydicom.filewriter import dcmwrite
from pydicom.uid import generate_uid
from pynetdicom import AE, _config

from tests.auth import bearer
from tests.conftest import QR_AE
from tests.fuzz.mutations import cases, deep_nesting, deflate_bomb, pixel_bomb

SEED = int(os.environ.get("FUZZ_SEED", "20261123"))
CASES = int(os.environ.get("FUZZ_CASES", "120"))
TENANT = "fuzz"
PER_REQUEST = 10


def small_real_files(data_dir: Path) -> list[bytes]:
    paths = sorted((data_dir / "dcm_qa_nih").rglob("*.dcm")) + sorted((data_dir / "dcm_qa_ts").rglob("*.dcm"))
    paths += [p for p in sorted((data_dir / "pydicom-data").rglob("*.dcm")) if p.stat().st_size < 300_000][:12]
    return [p.read_bytes() for p in paths]


def restamped(payload: bytes) -> bytes:
    ds = dcmread(io.BytesIO(payload))
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    out = io.BytesIO()
    dcmwrite(out, ds, enforce_file_format=True)
    return out.getvalue()


def stow(stack, payloads: list[bytes]) -> requests.Response:
    boundary = uuid.uuid4().hex
    body = b"".join(f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode() + p + b"\r\n" for p in payloads)
    body += f"--{boundary}--\r\n".encode()
    return requests.post(stack.url("/dicomweb/studies"), data=body, timeout=300, headers={
        **bearer(TENANT, ["writer"]), "Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}'})


def test_mutated_real_files_never_get_a_server_error(stack, data_dir):
    files = small_real_files(data_dir)
    batch: list[tuple[str, bytes]] = []
    for name, payload in cases(files, SEED, CASES):
        batch.append((name, payload))
        if len(batch) == PER_REQUEST:
            _check_batch(stack, batch)
            batch = []
    if batch:
        _check_batch(stack, batch)
    # still healthy and still storing (a new instance: a mutant may have taken the original's UID)
    assert stow(stack, [restamped(files[0])]).status_code == 200


def _check_batch(stack, batch: list[tuple[str, bytes]]) -> None:
    response = stow(stack, [payload for _, payload in batch])
    names = ", ".join(name for name, _ in batch)
    assert response.status_code in (200, 202, 409), f"seed {SEED}, cases {names}: HTTP {response.status_code} {response.text[:300]}"
    for failure in response.json().get("00081198", {}).get("Value", []):
        assert failure["00081197"]["Value"][0] in (0xA700, 0xA900, 0xA901, 0xC000, 0x0110), failure


@pytest.mark.parametrize(("attack", "reason"), [
    (deep_nesting, "nested deeper"),
    (deflate_bomb, "max_inflated_bytes"),
    (pixel_bomb, "max_frame_bytes"),
])
def test_known_attacks_are_refused_with_a_reason_over_stow(stack, data_dir, attack, reason):
    response = stow(stack, [attack(small_real_files(data_dir)[0])])
    assert response.status_code == 409, response.text[:300]
    (failure,) = response.json()["00081198"]["Value"]
    assert failure["00090010"]["Value"] == ["dicomflow"] and reason in failure["00091001"]["Value"][0]


@pytest.mark.parametrize("attack", [deep_nesting, deflate_bomb, pixel_bomb])
def test_known_attacks_are_refused_over_dimse(stack, data_dir, tmp_path, attack):
    """The file's own bytes go on the wire (pynetdicom's chunked send), as a broken modality sends them."""
    path = tmp_path / "attack.dcm"
    path.write_bytes(attack(small_real_files(data_dir)[0]))
    previous = _config.STORE_SEND_CHUNKED_DATASET
    _config.STORE_SEND_CHUNKED_DATASET = True
    ae = AE(ae_title=QR_AE)
    for syntax in ("1.2.840.10008.1.2.1", "1.2.840.10008.1.2.1.99", "1.2.840.10008.1.2.4.90"):
        ae.add_requested_context("1.2.840.10008.5.1.4.1.1.4", [syntax])  # one context each: sent as stored
    try:
        assoc = ae.associate("127.0.0.1", stack.settings.dimse_port, ae_title=stack.settings.ae_title)
        assert assoc.is_established
        try:
            status = assoc.send_c_store(str(path))
        finally:
            assoc.release()
    finally:
        _config.STORE_SEND_CHUNKED_DATASET = previous
    assert status.Status == 0xC000, status
