"""One tenant's slow renders on the real stack (issue 27 item 4): while they hold that tenant's
decode threads and the decode pool, another tenant's QIDO, metadata and retrieve answer at once,
and its own render is admitted beside them instead of queueing behind every one. Before, decode
waits ran on the replica's default executor (a handful of threads), where everything else that
needs a thread queued behind them. Only the order of the answers is asserted."""

from __future__ import annotations

import io
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import requests
from pydicom import dcmread
from pydicom.uid import JPEG2000Lossless, generate_uid

from tests.auth import auth_headers

SLOW, QUICK = "slowrenders", "quickreader"
RENDERS = 12  # three times the tenant's share (decode_tenant_threads = 4), six times the decode workers
DATA = ("pydicom-data", "data_store", "data")


def _stow(stack, tenant: str, payload: bytes) -> str:
    boundary = uuid.uuid4().hex
    body = f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode() + payload + f"\r\n--{boundary}--\r\n".encode()
    response = requests.post(
        stack.url("/dicomweb/studies"),
        data=body,
        timeout=120,
        headers={**auth_headers(tenant), "Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}'},
    )
    assert response.status_code == 200, response.text
    h = dcmread(io.BytesIO(payload), stop_before_pixels=True)
    return f"/dicomweb/studies/{h.StudyInstanceUID}/series/{h.SeriesInstanceUID}/instances/{h.SOPInstanceUID}"


def _large_real_j2k(source: Path) -> bytes:
    """A real 1024 x 1024 MR tiled 2 x 2 and stored as lossless JPEG 2000: a valid object whose
    codestream agrees with its header, and whose render takes a decode worker most of a second."""
    ds = dcmread(source)
    pixels = np.tile(ds.pixel_array, (2, 2))
    ds.Rows, ds.Columns = pixels.shape
    ds.compress(JPEG2000Lossless, pixels, encoding_plugin="pylibjpeg")
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


@pytest.fixture(scope="module")
def instances(stack, data_dir) -> dict[str, str]:
    slow = _stow(stack, SLOW, _large_real_j2k(data_dir.joinpath(*DATA, "MR2_UNCR.dcm")))
    quick = _stow(stack, QUICK, data_dir.joinpath(*DATA, "MR2_J2KR.dcm").read_bytes())
    return {SLOW: slow, QUICK: quick}


class Finishes:
    """The order in which requests were answered."""

    def __init__(self) -> None:
        self.order: list[str] = []
        self.statuses: dict[str, int] = {}
        self._lock = threading.Lock()

    def call(self, name: str, send: Callable[[], requests.Response]) -> None:
        response = send()
        with self._lock:
            self.order.append(name)
            self.statuses[name] = response.status_code

    def rank(self, name: str) -> int:
        """How many slow renders were answered before `name`."""
        return sum(1 for n in self.order[: self.order.index(name)] if n.startswith("render-"))


def _get(stack, tenant: str, path: str, **headers: str) -> Callable[[], requests.Response]:
    return lambda: requests.get(stack.url(path), headers={**auth_headers(tenant), **headers}, timeout=180)


def test_slow_renders_of_one_tenant_do_not_hold_up_another_tenants_reads(stack, instances):
    slow, quick = instances[SLOW], instances[QUICK]
    study = quick.split("/series/")[0]
    finishes = Finishes()
    with ThreadPoolExecutor(RENDERS + 4) as clients:
        for i in range(RENDERS):
            clients.submit(finishes.call, f"render-{i}", _get(stack, SLOW, slow + "/rendered", Accept="image/jpeg"))
        time.sleep(1.0)  # not a measure: lets the renders reach the replica before the reads below
        others = {
            "qido": _get(stack, QUICK, "/dicomweb/studies"),
            "metadata": _get(stack, QUICK, study + "/metadata", **{"Accept-Encoding": "identity"}),
            "retrieve": _get(stack, QUICK, quick, Accept="multipart/related; type=application/dicom; transfer-syntax=*"),
            "their-render": _get(stack, QUICK, quick + "/rendered", Accept="image/jpeg"),
        }
        for name, send in others.items():
            clients.submit(finishes.call, name, send)
    assert len(finishes.order) == RENDERS + len(others), finishes.order
    assert all(finishes.statuses[name] == 200 for name in others), finishes.statuses
    # a render over the tenant's share waits for it, and past decode_queue_seconds is told to retry
    assert {finishes.statuses[f"render-{i}"] for i in range(RENDERS)} <= {200, 503}
    assert any(finishes.statuses[f"render-{i}"] == 200 for i in range(RENDERS))
    for name in ("qido", "metadata", "retrieve"):
        assert finishes.rank(name) < RENDERS // 2, (name, finishes.order)
    assert finishes.rank("their-render") < RENDERS - 1, finishes.order
