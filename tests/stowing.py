"""One STOW-RS of whole objects into a tenant, as a stack test sends them."""

from __future__ import annotations

import io

import requests
from pydicom import dcmread

from tests.auth import auth_headers


def stow_study(stack, tenant: str, payloads: list[bytes]) -> str:
    """POST the objects in one request (200 asserted); the first one's StudyInstanceUID."""
    body = b"".join(b"--b\r\nContent-Type: application/dicom\r\n\r\n" + p + b"\r\n" for p in payloads) + b"--b--\r\n"
    headers = {**auth_headers(tenant), "Content-Type": 'multipart/related; type="application/dicom"; boundary=b'}
    answer = requests.post(stack.url("/dicomweb/studies"), data=body, headers=headers, timeout=120)
    assert answer.status_code == 200, answer.text
    return str(dcmread(io.BytesIO(payloads[0]), stop_before_pixels=True).StudyInstanceUID)
