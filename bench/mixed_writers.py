"""The writers of the mixed-load part (bench/mixed_load.py): DIMSE writers, each its own OS process
as modalities are, and STOW-RS threads (in one process of their own, so that building their bodies
does not take the readers' interpreter), all writing real files of the shared data, restamped.

A restamp here changes bytes, not datasets: every Study, Series and SOP Instance UID of a file is
replaced by a new UID of the same length, so no length in the file changes and nothing is parsed or
encoded while the clock runs (testkit.restamp.as_new_study decodes and re-encodes each file, which
costs more CPU than a 2-core machine has to spare beside two servers). Each pass over the files makes
every one of their studies a new study.
"""

from __future__ import annotations

import random
import statistics
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import requests
from pydicom import dcmread
from pynetdicom import AE, _config

from bench.workloads import Target, multipart_body

DIMSE_TIMEOUT = 30.0  # what a modality waits for a C-STORE response before it aborts (pynetdicom's default)
STOW_BATCH = 50  # instances per STOW-RS request, as bench/workloads.stow_rate sends them
UID_ROOT = "1.2.826.0.1.3680043.8.498."  # pydicom's root, for UIDs long enough to hold it


@dataclass(frozen=True)
class Template:
    """A file's bytes and the UIDs a restamp replaces in them."""

    data: bytes
    uids: tuple[str, ...]  # longest first, so that a UID that extends another is replaced whole
    context: tuple[str, str]  # (SOP Class UID, Transfer Syntax UID)


def templates(files: list[Path]) -> list[Template]:
    """One template per SOP Instance UID (the data holds re-encodings sharing one: a pass would send
    other bytes under one new UID, a conflict rather than a write)."""
    out: dict[str, Template] = {}
    for path in files:
        ds = dcmread(path, stop_before_pixels=True)
        uids = {str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID), str(ds.SOPInstanceUID)}
        context = (str(ds.SOPClassUID), str(ds.file_meta.TransferSyntaxUID))
        out.setdefault(str(ds.SOPInstanceUID), Template(path.read_bytes(), tuple(sorted(uids, key=len, reverse=True)), context))
    return list(out.values())


def same_length_uid(length: int, rng: random.Random) -> str:
    root = UID_ROOT if length >= len(UID_ROOT) + 2 else "2.25."
    digits = length - len(root)
    return root + str(rng.randint(1, 9)) + "".join(str(rng.randint(0, 9)) for _ in range(digits - 1))


def restamped_forever(items: list[Template]) -> Iterator[bytes]:
    """The templates' bytes, pass after pass, each pass under new UIDs (seeded from the OS: no two
    writers, runs or systems ever send one UID twice)."""
    rng = random.Random()
    while True:
        mapping: dict[str, str] = {}
        for item in items:
            data = item.data
            for old in item.uids:
                new = mapping.setdefault(old, same_length_uid(len(old), rng))
                data = data.replace(old.encode(), new.encode())
            yield data


@dataclass
class WriterResult:
    """What one writer did: its successes and the time every request waited for its answer."""

    name: str
    stored: int = 0
    failed: int = 0
    timeouts: int = 0  # requests that got no answer within DIMSE_TIMEOUT: the association aborted, the object resent
    seconds: float = 0.0
    response_s: list[float] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        times = sorted(self.response_s) or [0.0]
        out = {k: v for k, v in asdict(self).items() if k != "response_s"}
        return out | {
            "requests": len(self.response_s),
            "rate": self.stored / self.seconds if self.seconds else 0.0,
            "p50_ms": 1000 * statistics.median(times),
            "p99_ms": 1000 * percentile(times, 0.99),
            "max_ms": 1000 * times[-1],
        }


def percentile(ordered: list[float], q: float) -> float:
    """The nearest-rank percentile of an ordered list."""
    return ordered[min(len(ordered) - 1, max(0, int(round(q * len(ordered) + 0.5)) - 1))]


def _modality(contexts: set[tuple[str, str]]) -> AE:
    _config.STORE_SEND_CHUNKED_DATASET = True  # a file's dataset goes as its bytes, never decoded
    ae = AE(ae_title="MIXEDWRITER")
    ae.dimse_timeout = DIMSE_TIMEOUT
    for sop_class, syntax in sorted(contexts):
        ae.add_requested_context(sop_class, [syntax])
    return ae


@dataclass
class Writer:
    """One DIMSE writer: what it sends with and where it says which request is in flight."""

    ae: AE
    target: Target
    spool: Path
    in_flight: Any  # a shared array of monotonic times, one per writer (0: none), read by the stall watch
    index: int
    result: WriterResult


def _send(w: Writer, data: bytes, state: Any) -> Any:
    """One object stored, resent on a new association after a timeout; the association to use next."""
    result = w.result
    w.spool.write_bytes(data)
    while True:
        if state is None or not state.is_established:
            state = w.ae.associate("127.0.0.1", w.target.dimse_port, ae_title=w.target.ae)
            if not state.is_established:
                raise RuntimeError(f"{result.name}: association to {w.target.ae} refused")
        started = w.in_flight[w.index] = time.monotonic()
        answer = state.send_c_store(w.spool)
        w.in_flight[w.index] = 0.0
        result.response_s.append(time.monotonic() - started)
        if "Status" in answer:
            result.stored += answer.Status in (0x0000, 0xB000, 0xB006, 0xB007)
            result.failed += answer.Status not in (0x0000, 0xB000, 0xB006, 0xB007)
            return state
        result.timeouts += 1  # no answer: pynetdicom has aborted the association; a modality resends
        state.abort()
        state = None


def dimse_writer(
    name: str, target: Target, files: list[Path], spool: Path, start: Any, seconds: float, out: Any, in_flight: Any, index: int
) -> None:
    """A process's life: load, wait at the start barrier, C-STORE until `seconds` have passed."""
    items = templates(files)
    w = Writer(_modality({t.context for t in items}), target, spool, in_flight, index, WriterResult(name))
    start.wait()
    began, association = time.monotonic(), None
    for data in restamped_forever(items):
        if time.monotonic() - began >= seconds:
            break
        association = _send(w, data, association)
    w.result.seconds = time.monotonic() - began
    if association is not None and association.is_established:
        association.release()
    out.put(w.result)


def _stow_thread(name: str, target: Target, items: list[Template], began: float, seconds: float) -> WriterResult:
    result = WriterResult(name)
    headers = {
        **target.headers,
        "Content-Type": 'multipart/related; type="application/dicom"; boundary=benchboundary',
        "Accept": "application/dicom+json",
    }
    stream = restamped_forever(items)
    while time.monotonic() - began < seconds:
        body = multipart_body([next(stream) for _ in range(STOW_BATCH)], "benchboundary")
        started = time.monotonic()
        answer = requests.post(target.dicomweb + "/studies", data=body, headers=headers, timeout=600)
        result.response_s.append(time.monotonic() - started)
        result.stored += STOW_BATCH if answer.status_code == 200 else 0
        result.failed += 0 if answer.status_code == 200 else STOW_BATCH
    result.seconds = time.monotonic() - began
    return result


def stow_writers(threads: int, target: Target, files: list[Path], start: Any, seconds: float, out: Any) -> None:
    """A process with `threads` STOW-RS threads, each on its own share of the files."""
    shares = [templates(files[i::threads]) for i in range(threads)]
    start.wait()
    began = time.monotonic()
    with ThreadPoolExecutor(threads) as pool:
        futures = [pool.submit(_stow_thread, f"stow{i}", target, shares[i], began, seconds) for i in range(threads)]
        for future in futures:
            out.put(future.result())
