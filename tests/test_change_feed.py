"""The change feed (issue 32 item 4), read as Microsoft's DICOM service clients read it: a client
polls `changefeed?offset=` while instances are stored from several threads at once and deleted,
and sees every change exactly once, numbered 1, 2, 3, ... with nothing appearing behind it."""

from __future__ import annotations

import io
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import requests
from pydicom import dcmread

from tests.auth import auth_headers
from tests.test_durability import new_study

TENANT = "feed"


def _get(stack, path: str, **params: object) -> requests.Response:
    return requests.get(stack.url(f"/dicomweb/{path}"), params=params, headers=auth_headers(TENANT, ["reader"]), timeout=60)


def _stow(stack, payload: bytes) -> None:
    body = b"--b\r\nContent-Type: application/dicom\r\n\r\n" + payload + b"\r\n--b--\r\n"
    headers = {**auth_headers(TENANT, ["writer"]), "Content-Type": 'multipart/related; type="application/dicom"; boundary=b'}
    assert requests.post(stack.url("/dicomweb/studies"), data=body, headers=headers, timeout=120).status_code == 200


class Poller(threading.Thread):
    """What a consumer does: remember the last sequence, ask for what came after."""

    def __init__(self, stack) -> None:
        super().__init__(daemon=True)
        self.stack, self.seen, self.stop = stack, [], threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            self.poll()
            time.sleep(0.1)

    def poll(self) -> None:
        after = self.seen[-1]["Sequence"] if self.seen else 0
        answer = _get(self.stack, "changefeed", offset=after, limit=100, includemetadata="false")
        assert answer.status_code == 200, answer.text
        self.seen.extend(answer.json())


def test_a_polling_client_sees_every_change_once_in_order(stack, data_dir):
    assert _get(stack, "changefeed/latest").json() == {"Sequence": 0}, "a tenant nothing happened to"
    studies = [new_study(data_dir, 4) for _ in range(3)]
    poller = Poller(stack)
    poller.start()
    with ThreadPoolExecutor(4) as pool:  # receipts racing each other to commit
        list(pool.map(lambda payload: _stow(stack, payload), [p for study in studies for p in study]))
    gone = dcmread(io.BytesIO(studies[0][0]), stop_before_pixels=True)
    deleted = requests.delete(
        stack.url(f"/dicomweb/studies/{gone.StudyInstanceUID}"), headers=auth_headers(TENANT, ["deleter"]), timeout=60
    )
    assert deleted.status_code == 204
    deadline = time.monotonic() + 30
    while len(poller.seen) < 16 and time.monotonic() < deadline:
        time.sleep(0.2)
    poller.stop.set()
    poller.join(timeout=30)
    poller.poll()  # one last read after everything

    sequences = [e["Sequence"] for e in poller.seen]
    assert sequences == list(range(1, 17)), f"missed, repeated or out of order: {sequences}"
    creates = [e for e in poller.seen if e["Action"] == "create"]
    deletes = [e for e in poller.seen if e["Action"] == "delete"]
    stored = {str(dcmread(io.BytesIO(p), stop_before_pixels=True).SOPInstanceUID) for study in studies for p in study}
    assert {e["SopInstanceUid"] for e in creates} == stored and len(creates) == 12
    assert {e["SopInstanceUid"] for e in deletes} == {
        str(dcmread(io.BytesIO(p), stop_before_pixels=True).SOPInstanceUID) for p in studies[0]
    }
    assert max(e["Sequence"] for e in creates) < min(e["Sequence"] for e in deletes)

    everything = _get(stack, "changefeed", offset=0, limit=100, includemetadata="true").json()
    state = {(e["SopInstanceUid"], e["Action"]): e["State"] for e in everything}
    for entry in creates:
        expected = "deleted" if entry["StudyInstanceUid"] == str(gone.StudyInstanceUID) else "current"
        assert state[(entry["SopInstanceUid"], "create")] == expected
    current = next(e for e in everything if e["State"] == "current")
    assert current["Metadata"]["00080018"]["Value"] == [current["SopInstanceUid"]]
    assert current["SopClassUid"] == current["Metadata"]["00080016"]["Value"][0]
    assert all(e["Metadata"] is None for e in everything if e["State"] != "current")
    latest = _get(stack, "changefeed/latest", includemetadata="false").json()
    assert latest["Sequence"] == 16 and latest["Action"] == "delete"


def test_the_feed_is_per_tenant_and_for_readers(stack):
    other = requests.get(stack.url("/dicomweb/changefeed"), headers=auth_headers("feedother", ["reader"]), timeout=60)
    assert other.status_code == 200 and other.json() == [], "another tenant's changes are not in this tenant's feed"
    writer_only = requests.get(stack.url("/dicomweb/changefeed"), headers=auth_headers(TENANT, ["writer"]), timeout=60)
    assert writer_only.status_code == 403
    assert requests.get(stack.url("/dicomweb/changefeed"), timeout=60).status_code == 401
    rooted = requests.get(
        stack.url(f"/tenants/{TENANT}/dicomweb/changefeed"), headers=auth_headers(TENANT, ["reader"]), timeout=60
    )
    assert rooted.status_code == 200
