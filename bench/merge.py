"""Issue 29 item 4: an HL7 A40 merge of a patient with 50 studies / 10,000 instances (real Toshiba MR
files restamped), how long it takes, and QIDO answering throughout (latency before and during the
merge, and any error). Starts its own stack (auth off, one HL7 sender) under a temporary var dir.

    .venv/bin/python -m bench.merge [--studies 50] [--per-study 200]
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import statistics
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import hl7
import requests
from hl7.client import MLLPClient
from pydicom import dcmread
from temporalio.client import WorkflowExecutionStatus

from contract import names
from testkit.restamp import as_new_study
from testkit.running_stack import RunningStack, free_port, stack_overrides
from testkit.temporal_waits import wait_completed

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
FACILITY = "BENCHHOSP"


def _stow(stack: RunningStack, payloads: list[bytes]) -> None:
    for start in range(0, len(payloads), 50):
        body = b"".join(b"--b\r\nContent-Type: application/dicom\r\n\r\n" + p + b"\r\n" for p in payloads[start : start + 50])
        answer = requests.post(
            stack.url("/dicomweb/studies"),
            data=body + b"--b--\r\n",
            headers={"Content-Type": 'multipart/related; type="application/dicom"; boundary=b'},
            timeout=300,
        )
        answer.raise_for_status()


class QidoProbe(threading.Thread):
    """A viewer's study search, over and over: its latencies and failures."""

    def __init__(self, stack: RunningStack) -> None:
        super().__init__(daemon=True)
        self.stack, self.latencies, self.errors, self.stop = stack, [], 0, threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            started = time.perf_counter()
            try:
                answer = requests.get(self.stack.url("/dicomweb/studies"), params={"PatientName": "Merge*"}, timeout=30)
                answer.raise_for_status()
                self.latencies.append(time.perf_counter() - started)
            except requests.RequestException:
                self.errors += 1
            time.sleep(0.2)

    def summary(self) -> dict[str, float]:
        ms = sorted(x * 1000 for x in self.latencies)
        return {
            "requests": len(ms),
            "errors": self.errors,
            "p50_ms": round(statistics.median(ms), 1),
            "p95_ms": round(ms[int(len(ms) * 0.95) - 1], 1),
            "max_ms": round(ms[-1], 1),
        }


def _probe(stack: RunningStack, seconds: float) -> dict[str, float]:
    probe = QidoProbe(stack)
    probe.start()
    time.sleep(seconds)
    probe.stop.set()
    probe.join()
    return probe.summary()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--studies", type=int, default=50)
    parser.add_argument("--per-study", type=int, default=200)
    args = parser.parse_args()
    files = sorted(p for p in (DATA / "dcm_qa_toshiba").rglob("*") if p.is_file())[: args.per_study]
    var = Path(tempfile.mkdtemp(prefix="bench-merge-")) / "var"
    hl7_port = free_port()
    overrides = stack_overrides(
        var,
        hl7_port=hl7_port,
        hl7_senders={FACILITY: {"tenant": "default", "allowed_hosts": ["127.0.0.0/8"]}},
        stable_seconds=2.0,
    )
    stack = RunningStack(overrides, var.parent / "up.log")
    stack.start()
    try:
        print(json.dumps(run(stack, files, args.studies, hl7_port), indent=2))
    finally:
        stack.stop()


def run(stack: RunningStack, files: list[Path], studies: int, hl7_port: int) -> dict[str, object]:
    started = time.monotonic()
    uids = []
    with ThreadPoolExecutor(4) as pool:
        payloads = [as_new_study(files, PatientID="MERGE-OLD", PatientName="Merge^Bench") for _ in range(studies)]
        uids = [str(dcmread(io.BytesIO(p[0]), stop_before_pixels=True).StudyInstanceUID) for p in payloads]
        list(pool.map(lambda p: _stow(stack, p), payloads))
    stored = time.monotonic() - started
    ids = [names.study_workflow_id("default", uid) for uid in uids]
    time.sleep(3)
    _wait(stack, ids)
    before = _probe(stack, 20)
    probe = QidoProbe(stack)
    probe.start()
    message = "\r".join(
        [
            f"MSH|^~\\&|PAS|{FACILITY}|DICOMFLOW|RAD|20261207120000||ADT^A40^ADT_A39|BENCH-MERGE-1|P|2.5",
            "EVN|A40|20261207120000",
            "PID|||MERGE-NEW^^^BENCHHOSP^MR||Merge^Bench^Done||19700101|O",
            "MRG|MERGE-OLD^^^BENCHHOSP^MR",
        ]
    )
    merge_started = time.monotonic()
    with MLLPClient("127.0.0.1", hl7_port) as client:
        ack = hl7.parse(client.send_message(message).decode())
    wid = names.update_workflow_id("default", f"hl7:{FACILITY}:BENCH-MERGE-1")
    _wait(stack, [wid], timeout=3600)
    merged = time.monotonic() - merge_started
    probe.stop.set()
    probe.join()
    found = requests.get(stack.url("/dicomweb/studies"), params={"PatientID": "MERGE-NEW", "limit": 1000}, timeout=60).json()
    return {
        "studies": studies,
        "instances": studies * len(files),
        "stored_seconds": round(stored, 1),
        "ack": str(ack.segment("MSA")(1)),
        "merge_seconds": round(merged, 1),
        "instances_per_second": round(studies * len(files) / merged, 1),
        "studies_under_new_id": len(found),
        "qido_before": before,
        "qido_during_merge": probe.summary(),
    }


def _wait(stack: RunningStack, ids: list[str], timeout: float = 1800) -> None:
    statuses = asyncio.run(wait_completed(stack.settings, ids, timeout=timeout))
    bad = {k: v for k, v in statuses.items() if v != WorkflowExecutionStatus.COMPLETED}
    if bad or len(statuses) != len(ids):
        raise RuntimeError(f"workflows not completed: {list(bad.items())[:5]}")


if __name__ == "__main__":
    main()
