"""Hostile input over STOW-RS and C-STORE: mutated real files (fixed seed, 1,000 cases in `make test`,
about 8 s; `make fuzz` runs more) and the known attacks. Every object gets a 4xx-class answer or is
stored; never a 5xx, never a crash; what was stored before is untouched, no spool file is left, and
the archive keeps storing good files afterwards."""

from __future__ import annotations

import hashlib
import io
import os
import uuid
from pathlib import Path

import psutil
import psycopg
import pytest
import requests
from pydicom import dcmread
from pydicom.filewriter import dcmwrite
from pydicom.uid import generate_uid
from pynetdicom import AE, _config

from testkit.running_stack import processes_using
from tests.auth import bearer
from tests.conftest import QR_AE
from tests.fuzz.mutations import cases, deep_nesting, deflate_bomb, pixel_bomb

SEED = int(os.environ.get("FUZZ_SEED", "20261123"))
CASES = int(os.environ.get("FUZZ_CASES", "1000"))
TENANT = "fuzz"
PER_REQUEST = 10
RSS_BOUND = 2 * 2**30  # per process; a replica or an SCP at rest holds ~250-300 MB


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
    return requests.post(
        stack.url("/dicomweb/studies"),
        data=body,
        timeout=300,
        headers={
            **bearer(TENANT, ["writer"]),
            "Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}',
        },
    )


def _stored(stack) -> dict[str, tuple[str, str]]:
    """SOP Instance UID -> (blob key, sha256) of every instance the fuzz tenant has."""
    with psycopg.connect(stack.settings.effective_postgres_dsn()) as conn:
        rows = conn.execute("SELECT sop_uid, blob_key, sha256 FROM instance WHERE tenant = %s", (TENANT,)).fetchall()
    return {sop: (key, digest) for sop, key, digest in rows}


def _blob_sha256(stack, key: str) -> str:
    return hashlib.sha256((stack.settings.var_path / "blobs" / key).read_bytes()).hexdigest()


def _spool_files(stack) -> list[Path]:
    spool = stack.settings.var_path / "blobs" / ".spool"
    return [p for p in spool.rglob("*") if p.is_file()] if spool.exists() else []


def _largest_rss(stack) -> tuple[int, str]:
    """The largest resident size among the stack's processes: its servers and Ray's workers."""
    servers = {p.pid for p in processes_using(stack.settings.var_path)}
    sizes = [
        (p.info["memory_info"].rss, " ".join((p.info["cmdline"] or [])[:2]))
        for p in psutil.process_iter(["name", "cmdline", "memory_info"])
        if p.info["memory_info"] and (p.pid in servers or (p.info["name"] or "").startswith("ray::"))
    ]
    return max(sizes)


def test_mutated_real_files_never_get_a_server_error(stack, data_dir):
    """Per run: no 5xx, what was stored before is untouched (rows
    and bytes), no spool file left behind, and no process of the stack grew past RSS_BOUND."""
    files = small_real_files(data_dir)
    assert stow(stack, [restamped(f) for f in files[:5]]).status_code == 200
    before = _stored(stack)
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
    after = _stored(stack)
    assert {sop: after.get(sop) for sop in before} == before, "a stored instance's row changed"
    assert all(_blob_sha256(stack, key) == digest for key, digest in before.values()), "stored bytes changed"
    assert _spool_files(stack) == [], "spool files were left behind"
    rss, which = _largest_rss(stack)
    assert rss < RSS_BOUND, f"{which} holds {rss / 2**20:.0f} MiB after {CASES} cases"


def _check_batch(stack, batch: list[tuple[str, bytes]]) -> None:
    response = stow(stack, [payload for _, payload in batch])
    names = ", ".join(name for name, _ in batch)
    assert response.status_code in (200, 202, 409), (
        f"seed {SEED}, cases {names}: HTTP {response.status_code} {response.text[:300]}"
    )
    for failure in response.json().get("00081198", {}).get("Value", []):
        assert failure["00081197"]["Value"][0] in (0xA700, 0xA900, 0xA901, 0xC000, 0x0110), failure


@pytest.mark.parametrize(
    ("attack", "reason"),
    [
        (deep_nesting, "nested deeper"),
        (deflate_bomb, "max_inflated_bytes"),
        (pixel_bomb, "max_frame_bytes"),
    ],
)
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
        assoc = ae.associate("127.0.0.1", stack.settings.dimse.port, ae_title=stack.settings.dimse.ae_title)
        assert assoc.is_established
        try:
            status = assoc.send_c_store(str(path))
        finally:
            assoc.release()
    finally:
        _config.STORE_SEND_CHUNKED_DATASET = previous
    assert status.Status == 0xC000, status


def test_a_file_meta_uid_that_is_no_uid_is_refused_alone(stack, data_dir):
    """The 1,000-case run found it (seed 20261123, cases 270-279, HTTP 500 before the fix): bytes
    that are no UID in (0002,0003) can make pydicom raise where receipt read them outside its parse
    guard. Whether pydicom raises depends on the value, so this asserts the refusal either way:
    C000 when it cannot be read, A900 when it reads but differs from the dataset's UID."""
    payload = restamped(small_real_files(data_dir)[0])
    uid = str(dcmread(io.BytesIO(payload)).file_meta.MediaStorageSOPInstanceUID)
    hostile = payload.replace(uid.encode(), uid[:10].encode() + b"\xe2\xff\xff\xff" + uid[14:].encode(), 1)
    assert hostile != payload
    response = stow(stack, [hostile, restamped(payload)])
    assert response.status_code == 202, response.text[:300]
    [failure] = response.json()["00081198"]["Value"]
    assert failure["00081197"]["Value"][0] in (0xC000, 0xA900)
