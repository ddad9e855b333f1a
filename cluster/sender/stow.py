"""Sending over STOW-RS: files in batches (one multipart request each), retried on connection
errors and 5xx; the response says per instance what was stored and what was refused, and why."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import requests

from cluster.sender.outcome import Tally
from cluster.sender.sources import DicomFile

BATCH_FILES = 50
BATCH_BYTES = 100 * 2**20
ATTEMPTS = 3


@dataclass(frozen=True)
class StowTarget:
    url: str  # the DICOMweb root, e.g. http://127.0.0.1:8000/dicomweb
    headers: dict[str, str] = field(default_factory=dict)


def batches(files: list[DicomFile]) -> Iterator[list[DicomFile]]:
    batch: list[DicomFile] = []
    for item in files:
        if batch and (len(batch) >= BATCH_FILES or sum(f.size for f in batch) + item.size > BATCH_BYTES):
            yield batch
            batch = []
        batch.append(item)
    if batch:
        yield batch


def _body(batch: list[DicomFile], boundary: str) -> Iterator[bytes]:
    for item in batch:
        yield f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode()
        yield item.path.read_bytes()
        yield b"\r\n"
    yield f"--{boundary}--\r\n".encode()


def _post(target: StowTarget, batch: list[DicomFile]) -> requests.Response:
    boundary = uuid.uuid4().hex
    headers = {
        **target.headers,
        "Accept": "application/dicom+json",
        "Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}',
    }
    for attempt in range(1, ATTEMPTS + 1):
        try:
            response = requests.post(
                f"{target.url.rstrip('/')}/studies", data=b"".join(_body(batch, boundary)), headers=headers, timeout=300
            )
            if response.status_code < 500 or attempt == ATTEMPTS:
                return response
        except requests.ConnectionError:
            if attempt == ATTEMPTS:
                raise
        time.sleep(2**attempt)
    raise AssertionError("unreachable")


def _failures(body: dict) -> dict[str, str]:
    """SOP Instance UID -> reason, from the response's Failed SOP Sequence."""
    out = {}
    for item in body.get("00081198", {}).get("Value", []):
        uid = (item.get("00081155", {}).get("Value") or ["?"])[0]
        code = (item.get("00081197", {}).get("Value") or [0])[0]
        # a reason in words is private (dicomflow's: (0009,1001)); (0009,00xx) only names a private creator
        comment = next((v.get("Value", [""])[0] for k, v in item.items() if k.startswith("0009") and k[4:6] != "00"), "")
        out[uid] = f"FailureReason 0x{code:04X}" + (f": {comment}" if comment else "")
    return out


def send_stow(target: StowTarget, files: list[DicomFile], tally: Tally, advance: Callable[[int], None]) -> None:
    for batch in batches(files):
        try:
            response = _post(target, batch)
        except requests.ConnectionError as err:
            for item in batch:
                tally.rejected(str(item.path), f"not sent: {err}")
                advance(item.size)
            continue
        body = response.json() if "json" in response.headers.get("content-type", "") else {}
        # a 503 with a Failed SOP Sequence is the archive's answer (could not store now), not a proxy's
        answered = response.status_code in (200, 202, 409) or (response.status_code == 503 and "00081198" in body)
        failures = _failures(body) if answered else {}
        for item in batch:
            if not answered:
                tally.rejected(str(item.path), f"HTTP {response.status_code}: {str(body.get('error', response.text))[:120]}")
            elif item.sop_instance_uid in failures:
                tally.rejected(str(item.path), failures[item.sop_instance_uid])
            else:
                tally.accepted(item.sop_instance_uid)
            advance(item.size)
