"""Mixed load (issue 33 item 2), dicomflow side by side with Orthanc: writers at full speed while
readers ask at a fixed offered rate.

- Writers: DIMSE_WRITERS C-STORE senders, each its own OS process as modalities are (pynetdicom, one
  association each, a modality's 30 s wait for each answer, then abort and resend), and STOW_THREADS
  STOW-RS threads (50 instances per request) in a process of their own; all of them on the real files
  of the shared data, restamped into new studies as they go (bench/mixed_writers.py).
- Readers: open loop at READ_RATE requests/s in all (not slowed by slow answers: each is timed from
  the moment it was due), in turn a QIDO study list, a series' metadata, a frame and a rendered
  image, the series and instances drawn from the data loaded before the run (the same draws for
  both systems).

Recorded per system and run: instances/s written, each read kind's p50 and p99, and every C-STORE's
response time (max, p99, timeouts), so that a stalled receipt shows. A C-STORE unanswered for
STALL_SECONDS triggers a diagnosis while it waits (dicomflow: py-spy dumps of its Ray processes,
pg_stat_activity and ungranted locks), written next to the results.

    BENCH_PARTS=mixed .venv/bin/python -m bench.run   # bench/results/<date>-mixed-load.json, beside the partial
"""

from __future__ import annotations

import datetime as dt
import json
import multiprocessing as mp
import os
import random
import statistics
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psutil
import psycopg
from pydicom import dcmread

from bench.cpu_split import CpuSplit
from bench.mixed_writers import WriterResult, dimse_writer, percentile, stow_writers
from bench.scale import _study_count, wait_ready
from bench.workloads import Target, timed_get

if TYPE_CHECKING:
    from bench.run import Bench

SECONDS = float(os.environ.get("BENCH_MIXED_SECONDS", "60"))
READ_RATE = float(os.environ.get("BENCH_MIXED_READ_RATE", "20"))  # offered reads/s, all kinds together
REPS = int(os.environ.get("BENCH_MIXED_REPS", "2"))
DIMSE_WRITERS = 4
STOW_THREADS = 2
READER_THREADS = 64  # enough that slow answers never hold back the next due request
STALL_SECONDS = 5.0
JSON = "application/dicom+json"
FRAMES = "multipart/related; type=application/octet-stream; transfer-syntax=*"


@dataclass(frozen=True)
class Read:
    kind: str
    path: str
    params: dict[str, Any]
    accept: str


def read_candidates(files: list[Path]) -> list[Read]:
    """The study list, then per loaded series its metadata and its first image's frame and rendering."""
    reads = [Read("QIDO study list", "/studies", {"limit": 25}, JSON)]
    seen: set[str] = set()
    for path in files:
        h = dcmread(path, stop_before_pixels=True)
        if str(h.SeriesInstanceUID) in seen or "Rows" not in h:
            continue
        seen.add(str(h.SeriesInstanceUID))
        series = f"/studies/{h.StudyInstanceUID}/series/{h.SeriesInstanceUID}"
        instance = f"{series}/instances/{h.SOPInstanceUID}"
        reads += [
            Read("series metadata", series + "/metadata", {}, JSON),
            Read("frames", instance + "/frames/1", {}, FRAMES),
            Read("rendered", instance + "/rendered", {}, "image/jpeg"),
        ]
    return reads


def answered_by_all(reads: list[Read], targets: dict[str, Target]) -> list[Read]:
    """The reads every system answers (an image one of them cannot render is no comparison)."""

    def ok(read: Read, target: Target) -> bool:
        try:
            timed_get(target, read.path, read.params, read.accept)
        except Exception:  # noqa: BLE001 - any failure drops the read for every system
            return False
        return True

    kept = [r for r in reads if all(ok(r, t) for t in targets.values())]
    print(f"  mixed: {len(kept)} of {len(reads)} reads answered by every system", flush=True)
    return kept


def schedule(reads: list[Read], count: int) -> list[Read]:
    """`count` reads, the kinds in turn, each drawn at random from its kind (the same draws every run)."""
    kinds = sorted({r.kind for r in reads})
    rng = random.Random(33)
    return [rng.choice([r for r in reads if r.kind == kinds[i % len(kinds)]]) for i in range(count)]


def _timed_read(target: Target, read: Read, due: float) -> tuple[str, float, bool]:
    try:
        timed_get(target, read.path, read.params, read.accept)
    except Exception:  # noqa: BLE001 - counted as failed, its time still recorded
        return read.kind, time.monotonic() - due, False
    return read.kind, time.monotonic() - due, True


def run_readers(target: Target, reads: list[Read], began: float) -> list[tuple[str, float, bool]]:
    """Open loop: request i is due at began + i / READ_RATE, sent then whatever the earlier ones do."""
    futures = []
    with ThreadPoolExecutor(READER_THREADS) as pool:
        for i, read in enumerate(reads):
            due = began + i / READ_RATE
            time.sleep(max(0.0, due - time.monotonic()))
            futures.append(pool.submit(_timed_read, target, read, due))
    return [f.result() for f in futures]


class StallWatch(threading.Thread):
    """Watches the DIMSE writers' requests in flight; one still unanswered after STALL_SECONDS gets
    `diagnose` called once, while it waits."""

    def __init__(self, in_flight: Any, diagnose: Any) -> None:
        super().__init__(daemon=True)
        self.in_flight, self.diagnose = in_flight, diagnose
        self.stalls: list[dict[str, Any]] = []
        self.done = threading.Event()

    def run(self) -> None:
        seen: set[float] = set()
        while not self.done.wait(0.5):
            for writer, since in enumerate(list(self.in_flight)):
                if since and since not in seen and time.monotonic() - since > STALL_SECONDS:
                    seen.add(since)
                    self.stalls.append({"writer": writer, "waited_s": time.monotonic() - since, "evidence": self.diagnose()})


def diagnose_dicomflow(dsn: str, folder: Path) -> str:
    """py-spy dumps of dicomflow's Ray processes and the index's activity and lock waits, to a file."""
    folder.mkdir(parents=True, exist_ok=True)
    out = folder / f"stall-{dt.datetime.now():%H%M%S}.txt"
    parts = [_pg_waits(dsn)]
    for proc in psutil.process_iter(["pid", "cmdline"]):
        title = " ".join(proc.info["cmdline"] or [])
        if title.startswith("ray::") and any(k in title for k in ("Scp", "Replica", "Worker")):
            dump = subprocess.run(["py-spy", "dump", "--pid", str(proc.info["pid"])], capture_output=True, text=True, timeout=30)
            parts.append(f"=== {proc.info['pid']} {title}\n{dump.stdout}{dump.stderr}")
    out.write_text("\n\n".join(parts))
    print(f"  mixed: a C-STORE waits over {STALL_SECONDS:g} s; evidence in {out}", flush=True)
    return str(out)


def _pg_waits(dsn: str) -> str:
    with psycopg.connect(dsn, autocommit=True) as conn:
        activity = conn.execute(
            "SELECT pid, state, wait_event_type, wait_event, now() - xact_start, now() - query_start, left(query, 160) "
            "FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid() ORDER BY xact_start"
        ).fetchall()
        locks = conn.execute(
            "SELECT pid, locktype, mode, classid, objid, pg_blocking_pids(pid) FROM pg_locks WHERE NOT granted"
        ).fetchall()
    rows = "\n".join(" | ".join(map(str, r)) for r in activity)
    return f"=== pg_stat_activity ({len(activity)} connections)\n{rows}\n=== ungranted locks\n" + "\n".join(map(str, locks))


def _writers(target: Target, files: list[Path], workdir: Path, in_flight: Any) -> tuple[list[Any], Any, Any]:
    """The writer processes, started and waiting at the start barrier (also this process's)."""
    ctx = mp.get_context("spawn")  # no fork of a process with threads; each writer a fresh interpreter
    start, out = ctx.Barrier(DIMSE_WRITERS + 2), ctx.Queue()
    procs = [
        ctx.Process(
            target=dimse_writer,
            args=(f"dimse{i}", target, files[i::DIMSE_WRITERS], workdir / f"spool{i}.dcm", start, SECONDS, out, in_flight, i),
        )
        for i in range(DIMSE_WRITERS)
    ]
    procs.append(ctx.Process(target=stow_writers, args=(STOW_THREADS, target, files, start, SECONDS, out)))
    for proc in procs:
        proc.start()
    return procs, start, out


def one_run(
    target: Target, files: list[Path], reads: list[Read], workdir: Path, diagnose: Any, server_pid: int
) -> dict[str, Any]:
    in_flight = mp.get_context("spawn").Array("d", DIMSE_WRITERS, lock=False)
    procs, start, out = _writers(target, files, workdir, in_flight)
    start.wait(timeout=600)
    watch = StallWatch(in_flight, diagnose)
    watch.start()
    cpu = CpuSplit({target.name: psutil.Process(server_pid)})
    cpu.start()
    began = time.monotonic()
    answered = run_readers(target, reads, time.monotonic())
    writers: list[WriterResult] = [out.get(timeout=SECONDS + 600) for _ in range(DIMSE_WRITERS + STOW_THREADS)]
    busy = {kind: seconds / (time.monotonic() - began) for kind, seconds in cpu.stop().items()}
    watch.done.set()
    for proc in procs:
        proc.join(60)
    return {"writers": writers, "reads": answered, "stalls": watch.stalls, "cores_busy": busy}


def summarize(run: dict[str, Any]) -> dict[str, Any]:
    writers: list[WriterResult] = run["writers"]
    dimse = sorted(t for w in writers if w.name.startswith("dimse") for t in w.response_s) or [0.0]
    reads: dict[str, Any] = {}
    for kind in sorted({k for k, _, _ in run["reads"]}):
        times = sorted(t for k, t, ok in run["reads"] if k == kind and ok) or [0.0]
        failed = sum(1 for k, _, ok in run["reads"] if k == kind and not ok)
        reads[kind] = {
            "n": len(times),
            "failed": failed,
            "p50_ms": 1000 * statistics.median(times),
            "p99_ms": 1000 * percentile(times, 0.99),
        }
    return {
        "instances_per_s": sum(w.stored for w in writers) / max(w.seconds for w in writers),
        "c_store_max_ms": 1000 * dimse[-1],
        "c_store_p99_ms": 1000 * percentile(dimse, 0.99),
        "c_store_timeouts": sum(w.timeouts for w in writers),
        "reads": reads,
        "writers": [w.summary() for w in writers],
        "stalls": run["stalls"],
        "cores_busy": run["cores_busy"],
    }


def record(bench: Bench, system: str, s: dict[str, Any]) -> None:
    bench.record("mixed: instances/s written", system, s["instances_per_s"])
    for kind, r in s["reads"].items():
        bench.record(f"mixed: {kind} p50 ms", system, r["p50_ms"])
        bench.record(f"mixed: {kind} p99 ms", system, r["p99_ms"])
    bench.record("mixed: C-STORE response max ms", system, s["c_store_max_ms"])
    bench.record("mixed: C-STORE response p99 ms", system, s["c_store_p99_ms"])
    bench.record("mixed: C-STORE timeouts (30 s, aborted and resent)", system, s["c_store_timeouts"])
    # where the 2 cores went while both wrote and read: the profile a read or write miss is read from
    bench.record("mixed: cores busy, all processes", system, sum(s["cores_busy"].values()))
    if system == "dicomflow":
        for kind, cores in s["cores_busy"].items():
            if cores >= 0.03:
                bench.record(f"mixed: cores busy, {kind}", system, cores)


def settle(bench: Bench, tenant: str) -> None:
    """Until dicomflow has processed every study written so far, so that its backlog does not run
    through the next system's turn."""
    dsn = bench.dicomflow.settings.effective_postgres_dsn()
    try:
        wait_ready(dsn, tenant, _study_count(dsn, tenant), timeout=1800)
    except RuntimeError as err:
        print(f"  mixed: {err}; going on", flush=True)


def mixed_load(bench: Bench, files: list[Path], results: Path) -> Path:
    """Both systems loaded with the data, then REPS runs each, the order alternating."""
    ae, tenant = bench.fresh_tenant()
    targets, files = bench.load_for_reads(files, (ae, tenant))
    planned = schedule(answered_by_all(read_candidates(files), targets), int(SECONDS * READ_RATE))
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d")
    diagnose = {
        "dicomflow": lambda: diagnose_dicomflow(
            bench.dicomflow.settings.effective_postgres_dsn(), results / f"{stamp}-mixed-stalls"
        )
    }
    runs = []
    for rep in range(REPS):
        for system in list(targets) if rep % 2 == 0 else list(reversed(list(targets))):
            print(f"  mixed: run {rep + 1}/{REPS}, {system}", flush=True)
            server = bench.dicomflow.process if system == "dicomflow" else bench.orthanc.process
            assert server is not None
            summary = summarize(
                one_run(targets[system], files, planned, bench.workdir, diagnose.get(system, lambda: ""), server.pid)
            )
            record(bench, system, summary)
            runs.append({"rep": rep, "system": system} | summary)
            settle(bench, tenant)
    out = results / f"{stamp}-mixed-load.json"
    for n in range(2, 100):  # never over an earlier run of the same day
        if not out.exists():
            break
        out = results / f"{stamp}-mixed-load-{n}.json"
    settings = {"seconds": SECONDS, "read_rate": READ_RATE, "dimse_writers": DIMSE_WRITERS, "stow_threads": STOW_THREADS}
    out.write_text(json.dumps({"date": stamp, "settings": settings, "runs": runs}, indent=2))
    return out
