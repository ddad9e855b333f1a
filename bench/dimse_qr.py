"""DIMSE query/retrieve, dicomflow side by side with Orthanc (issue 10), with dcmtk's own clients:

- C-FIND study level (`findscu -S`) at 2,000 and 20,000 studies: every kind of query in a round
  draws its values at random from the synthetic studies that exist, the same values for both systems
  (systems alternate within a round); median and p99 ms per kind. dicomflow's studies are bulk-loaded
  into its index (`bench.index_loader`, as the QIDO percentiles are); Orthanc has no bulk path, so it
  gets the same identities (`bench.synthetic`) as real 27 KB MR instances sent with `dcmsend`.
- C-FIND image level on the 520-instance series of dcm_qa_toshiba.
- C-MOVE of the 45 MB toshiba study to dcmtk's storescp (`movescu -aem STORESCP`) and C-GET of it
  (`getscu`), MB/s, one unmeasured warm-up each.
- The floor under every number above: an association with one C-ECHO (`echoscu`).

Each timing is a whole client run: process start, association, the operation, release, as a
workstation running dcmtk sees it. Both systems run on loopback with the same client options.

    python -m bench.dimse_qr                # bench/results/<date>-dimse-qr.{json,md}
    BENCH_QR_STEPS=200,500 BENCH_QR_ROUNDS=5 python -m bench.dimse_qr   # a trial (-partial file)

`make bench` runs it too (part `dimse-qr` of bench/run.py), into the day's common results file.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import random
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import psycopg
import requests
from pydicom import dcmread
from pydicom.dataset import Dataset
from pynetdicom import AE
from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind

from bench.index_loader import bulk_load
from bench.orthanc import Orthanc
from bench.qido_scale import percentile
from bench.run import DATA, RESULTS, SCP_PROCESSES, machine
from bench.scale import SYNTHETIC_SOURCE, _steps, wait_ready
from bench.summary import _verdict
from bench.synthetic import synthetic_patient, write_synthetic
from bench.targets import number
from bench.workloads import dcmsend_rate, files_of
from testkit.running_stack import RunningStack, free_port, stack_overrides

QR_AE = "QRSCU"  # the workstation: finds, moves, gets (and stores the toshiba study)
DEST_AE = "STORESCP"  # the C-MOVE destination: dcmtk's storescp
TENANT = "qrbench"
DEFAULT_STEPS = "2000,20000"
STEPS = _steps("BENCH_QR_STEPS", DEFAULT_STEPS)
ROUNDS = int(os.environ.get("BENCH_QR_ROUNDS", "40"))  # rounds of the selective study-level queries
ALL_ROUNDS = int(os.environ.get("BENCH_QR_ALL_ROUNDS", "5"))  # "all studies" answers every study: fewer
IMAGE_ROUNDS = int(os.environ.get("BENCH_QR_IMAGE_ROUNDS", "20"))
REPS = int(os.environ.get("BENCH_REPS", "3"))
RETRIEVE_ROUNDS = 3  # C-MOVEs and C-GETs per system and repetition: the spread of one each hid the medians
SMALL_MOVE_ROUNDS = 10  # one-instance C-MOVEs per system and repetition
TOSHIBA = DATA / "dcm_qa_toshiba"
CLIENT_ENV = {**os.environ, "TCP_NODELAY": "1"}  # as bench.workloads gives dcmsend
# what a worklist screen asks for; ModalitiesInStudy and the count are computed by both systems
STUDY_RETURN_KEYS = (
    "StudyInstanceUID",
    "PatientName",
    "PatientID",
    "StudyDate",
    "StudyTime",
    "AccessionNumber",
    "StudyDescription",
    "ModalitiesInStudy",
    "NumberOfStudyRelatedInstances",
)
IMAGE_RETURN_KEYS = ("SOPInstanceUID", "SOPClassUID", "InstanceNumber")
SHARED_MACHINE = (
    "a 2-core machine: other work running at the same time shows in the load averages under Checks; "
    "both systems saw the same noise, interleaved"
)

Record = Callable[[str, str, float], None]


@dataclass(frozen=True)
class Peer:
    name: str  # dicomflow | orthanc
    ae: str  # the called AE title
    port: int


def ae_table(dest_port: int) -> dict:
    return {
        QR_AE: {"allowed_hosts": ["127.0.0.0/8"], "tenant": TENANT, "services": ["store", "find", "move", "get"]},
        DEST_AE: {"host": "127.0.0.1", "port": dest_port, "services": []},
    }


def run_client(args: list[str], timeout: float = 900) -> float:
    """Seconds for one dcmtk client run; RuntimeError if it failed."""
    return timed_client(args, timeout).seconds


@dataclass(frozen=True)
class ClientRun:
    seconds: float  # wall time, as the user waits
    cpu_seconds: float  # the client's own CPU (user + system): no server can answer faster than this is spent


def timed_client(args: list[str], timeout: float = 900) -> ClientRun:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    result = subprocess.run(args, capture_output=True, text=True, env=CLIENT_ENV, timeout=timeout)
    elapsed = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(args[:6])} ... exited {result.returncode}: {(result.stderr or result.stdout)[-800:]}")
    return ClientRun(elapsed, after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)


def keys_args(level: str, match: dict[str, str], returned: tuple[str, ...]) -> list[str]:
    args = ["-k", f"QueryRetrieveLevel={level}"]
    for keyword, value in match.items():
        args += ["-k", f"{keyword}={value}"]
    for keyword in returned:
        if keyword not in match:
            args += ["-k", keyword]
    return args


def findscu(peer: Peer, level: str, match: dict[str, str], returned: tuple[str, ...]) -> ClientRun:
    # -q: findscu otherwise prints every answer (~0.1 ms each), which would be the client's time, not the server's
    return timed_client(
        ["findscu", "-S", "-q", "-aet", QR_AE, "-aec", peer.ae, *keys_args(level, match, returned), "127.0.0.1", str(peer.port)]
    )


def count_answers(peer: Peer, level: str, match: dict[str, str], returned: tuple[str, ...]) -> int:
    """Pending answers to a Study Root C-FIND (pynetdicom, untimed): that both systems find the same."""
    identifier = Dataset()
    identifier.QueryRetrieveLevel = level
    for keyword in returned:
        setattr(identifier, keyword, "")
    for keyword, value in match.items():
        setattr(identifier, keyword, value)
    ae = AE(ae_title=QR_AE)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 600
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
    assoc = ae.associate("127.0.0.1", peer.port, ae_title=peer.ae)
    if not assoc.is_established:
        raise RuntimeError(f"{peer.name} refused the association")
    try:
        statuses = [
            status.Status
            for status, _ in assoc.send_c_find(identifier, StudyRootQueryRetrieveInformationModelFind)
            if status is not None and "Status" in status
        ]
    finally:
        assoc.release()
    if not statuses or statuses[-1] != 0:
        raise RuntimeError(f"{peer.name} C-FIND {match} ended with status {statuses[-1:] or 'none'}")
    return statuses.count(0xFF00) + statuses.count(0xFF01)


def study_queries(loaded: int, rng: random.Random) -> list[tuple[str, dict[str, str]]]:
    """(kind, match keys) for one round; synthetic studies 0..loaded-1 exist (as in bench.qido_scale)."""
    who = synthetic_patient(rng.randrange(loaded))
    surname = who["PatientName"].split("^")[0]
    year = who["StudyDate"][:4]
    return [
        ("PatientName prefix*", {"PatientName": surname[:-2] + "*"}),
        ("PatientID exact", {"PatientID": who["PatientID"]}),
        ("StudyDate month range", {"StudyDate": f"{year}0301-{year}0331"}),
    ]


class Storescp:
    """dcmtk's storescp as the C-MOVE destination of both systems; each move lands in a fresh folder."""

    def __init__(self, workdir: Path, port: int) -> None:
        self.out = workdir / "storescp-in"
        self.port = port
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            ["storescp", "-aet", DEST_AE, "-od", str(self.out), str(self.port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=CLIENT_ENV,
        )
        time.sleep(0.5)

    def clear(self) -> None:
        for path in self.out.iterdir():
            path.unlink()

    def received(self) -> int:
        return sum(1 for _ in self.out.iterdir())

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(10)
            self.process = None


class QR:
    """Both systems up, the toshiba study in each; then the workloads, each recording into `record`."""

    def __init__(self, workdir: Path, record: Record, reps: int = REPS) -> None:
        self.workdir = workdir
        self.record = record
        self.reps = reps
        self.checks: dict[str, object] = {}
        workdir.mkdir(parents=True, exist_ok=True)
        self.storescp = Storescp(workdir, free_port())
        overrides = stack_overrides(
            workdir / "dicomflow" / "var", ae_table=ae_table(self.storescp.port), stable_seconds=1.0, scp_processes=SCP_PROCESSES
        )
        self.dicomflow = RunningStack(overrides, workdir / "dicomflow.log")
        modalities = {QR_AE: (QR_AE, "127.0.0.1", free_port()), DEST_AE: (DEST_AE, "127.0.0.1", self.storescp.port)}
        self.orthanc = Orthanc(workdir / "orthanc", free_port(), free_port(), modalities=modalities)
        self.toshiba = files_of(TOSHIBA)
        self.toshiba_bytes = sum(p.stat().st_size for p in self.toshiba)
        first = dcmread(self.toshiba[0], stop_before_pixels=True)
        self.study_uid, self.series_uid = str(first.StudyInstanceUID), str(first.SeriesInstanceUID)
        self.loaded = 0  # synthetic studies in both systems

    @property
    def peers(self) -> list[Peer]:
        s = self.dicomflow.settings
        return [Peer("dicomflow", s.dimse.ae_title, s.dimse.port), Peer("orthanc", "ORTHANC", self.orthanc.dicom_port)]

    def ordered(self, rep: int) -> list[Peer]:
        return self.peers if rep % 2 == 0 else list(reversed(self.peers))

    @property
    def dsn(self) -> str:
        return self.dicomflow.settings.effective_postgres_dsn()

    def start(self) -> None:
        self.checks["load average (1/5/15 min) at start"] = [round(v, 2) for v in os.getloadavg()]
        self.dicomflow.start()
        self.orthanc.start(fresh=True)
        self.storescp.start()
        for peer in self.peers:  # the toshiba study, stored by the workstation's AE into each
            run_client(["dcmsend", "-nh", "-aet", QR_AE, "-aec", peer.ae, "127.0.0.1", str(peer.port), *map(str, self.toshiba)])
        wait_ready(self.dsn, TENANT, 1, timeout=900)  # its workflow done: no transcode running under the numbers
        self.checks["studies before growth"] = self.study_counts()

    def stop(self) -> None:
        self.storescp.stop()
        self.orthanc.stop()
        self.dicomflow.stop()

    def study_counts(self) -> dict[str, int]:
        with psycopg.connect(self.dsn) as conn:
            ours = conn.execute("SELECT count(*) FROM study WHERE tenant = %s", (TENANT,)).fetchone()[0]
        theirs = requests.get(self.orthanc.url + "/statistics", timeout=60).json()["CountStudies"]
        return {"dicomflow": ours, "orthanc": theirs}

    # the workloads ------------------------------------------------------------------------------

    def echo_floor(self) -> None:
        for rep in range(IMAGE_ROUNDS):
            for peer in self.ordered(rep):
                seconds = run_client(["echoscu", "-aet", QR_AE, "-aec", peer.ae, "127.0.0.1", str(peer.port)])
                self.record("C-ECHO association (the floor under every C-FIND) ms", peer.name, 1000 * seconds)

    def image_find(self) -> None:
        match = {"StudyInstanceUID": self.study_uid, "SeriesInstanceUID": self.series_uid}
        self.checks["C-FIND image answers"] = {p.name: count_answers(p, "IMAGE", match, IMAGE_RETURN_KEYS) for p in self.peers}
        for rep in range(IMAGE_ROUNDS):
            for peer in self.ordered(rep):
                self.record(
                    "C-FIND image level, 520-instance series ms",
                    peer.name,
                    1000 * findscu(peer, "IMAGE", match, IMAGE_RETURN_KEYS).seconds,
                )

    def _move(self, peer: Peer) -> float:
        self.storescp.clear()
        seconds = run_client(
            [
                "movescu",
                "-S",
                "-aet",
                QR_AE,
                "-aec",
                peer.ae,
                "-aem",
                DEST_AE,
                *keys_args("STUDY", {"StudyInstanceUID": self.study_uid}, ()),
                "127.0.0.1",
                str(peer.port),
            ]
        )
        got = self.storescp.received()
        if got != len(self.toshiba):
            raise RuntimeError(f"C-MOVE from {peer.name}: storescp got {got} of {len(self.toshiba)} instances")
        return seconds

    def _move_one(self, peer: Peer) -> float:
        first = dcmread(self.toshiba[0], stop_before_pixels=True)
        keys = {
            "StudyInstanceUID": self.study_uid,
            "SeriesInstanceUID": self.series_uid,
            "SOPInstanceUID": str(first.SOPInstanceUID),
        }
        self.storescp.clear()
        seconds = run_client(
            [
                "movescu",
                "-S",
                "-aet",
                QR_AE,
                "-aec",
                peer.ae,
                "-aem",
                DEST_AE,
                *keys_args("IMAGE", keys, ()),
                "127.0.0.1",
                str(peer.port),
            ]
        )
        if self.storescp.received() != 1:
            raise RuntimeError(f"C-MOVE of one instance from {peer.name}: storescp got {self.storescp.received()}")
        return seconds

    def _get(self, peer: Peer) -> float:
        out = Path(tempfile.mkdtemp(dir=self.workdir, prefix="getscu-"))
        try:
            seconds = run_client(
                [
                    "getscu",
                    "-S",
                    "-aet",
                    QR_AE,
                    "-aec",
                    peer.ae,
                    "-od",
                    str(out),
                    *keys_args("STUDY", {"StudyInstanceUID": self.study_uid}, ()),
                    "127.0.0.1",
                    str(peer.port),
                ]
            )
            got = sum(1 for _ in out.iterdir())
            if got != len(self.toshiba):
                raise RuntimeError(f"C-GET from {peer.name}: getscu got {got} of {len(self.toshiba)} instances")
            return seconds
        finally:
            shutil.rmtree(out)

    def retrieve(self) -> None:
        for peer in self.peers:  # one warm-up each (page cache, workers, plans), not recorded
            self._move(peer)
            self._get(peer)
        for rep in range(self.reps * SMALL_MOVE_ROUNDS):  # a workstation pulling one image: the fixed cost
            for peer in self.ordered(rep):
                self.record("C-MOVE one instance to storescp ms", peer.name, 1000 * self._move_one(peer))
        for rep in range(self.reps * RETRIEVE_ROUNDS):
            for peer in self.ordered(rep):
                self.record(
                    "C-MOVE study (45 MB, 520 inst) to storescp MB/s", peer.name, self.toshiba_bytes / self._move(peer) / 1e6
                )
                self.record("C-GET study (45 MB, 520 inst) MB/s", peer.name, self.toshiba_bytes / self._get(peer) / 1e6)
        self.storescp.clear()

    def grow(self, step: int) -> None:
        """Synthetic studies loaded..step-1 into both: rows into dicomflow's index, instances into Orthanc."""
        count = step - self.loaded
        started = time.monotonic()
        bulk_load(self.dicomflow.settings.effective_postgres_dsn(), TENANT, self.loaded, count)
        print(f"  dicomflow: {count} studies bulk-loaded in {time.monotonic() - started:.1f} s", flush=True)
        batch = list(write_synthetic(DATA / SYNTHETIC_SOURCE, self.loaded, count, self.workdir / "synthetic"))
        rate = dcmsend_rate("ORTHANC", self.orthanc.dicom_port, batch, 4)
        print(f"  orthanc: {count} synthetic instances sent by dcmsend, 4 associations, {rate:.0f}/s", flush=True)
        for path in batch:
            path.unlink()
        self.loaded = step
        counts = self.study_counts()
        self.checks[f"studies at {step:,}"] = counts
        if counts["dicomflow"] != counts["orthanc"]:
            raise RuntimeError(f"the systems hold different numbers of studies: {counts}")

    def study_find(self, step: int, seed: int = 11) -> None:
        rng = random.Random(seed)
        label = f"C-FIND study at {step:,} studies: "
        answers: dict[str, dict[str, int]] = {}
        for kind, match in [("all studies", {}), *study_queries(self.loaded, random.Random(seed))]:
            answers[kind] = {p.name: count_answers(p, "STUDY", match, STUDY_RETURN_KEYS) for p in self.peers}
        self.checks[f"{label}answers in round 1"] = answers
        for rnd in range(max(ROUNDS, ALL_ROUNDS)):
            queries = study_queries(self.loaded, rng)
            if rnd < ALL_ROUNDS:
                queries.insert(0, ("all studies", {}))
            for kind, match in queries if rnd < ROUNDS else queries[:1]:
                for peer in self.ordered(rnd):
                    run = findscu(peer, "STUDY", match, STUDY_RETURN_KEYS)
                    self.record(f"{label}{kind} ms", peer.name, 1000 * run.seconds)
                    # the floor any server meets: the ratio targets are read against it (issue 10)
                    self.record(f"{label}{kind}, findscu's own CPU ms", peer.name, 1000 * run.cpu_seconds)


def workloads(workdir: Path, record: Record, reps: int = REPS, failed: list[str] | None = None) -> dict[str, object]:
    """Every DIMSE Q/R workload, with its own dicomflow, Orthanc and storescp (all stopped after).
    A workload that fails is named in `failed` and the rest still run; returns the checks made."""
    failed = [] if failed is None else failed
    qr = QR(workdir, record, reps)

    def attempt(name: str, step: Callable[[], None]) -> bool:
        try:
            step()
            return True
        except Exception:  # noqa: BLE001 - reported by the caller and in the exit code
            traceback.print_exc()
            failed.append(name)
            return False

    try:
        if attempt("start", qr.start):
            attempt("echo", qr.echo_floor)
            attempt("find-image", qr.image_find)
            attempt("move-get", qr.retrieve)
            for step in STEPS:
                if not attempt(f"grow-{step}", lambda step=step: qr.grow(step)):
                    break
                attempt(f"find-study-{step}", lambda step=step: qr.study_find(step))
    finally:
        qr.checks["load average (1/5/15 min) at end"] = [round(v, 2) for v in os.getloadavg()]
        qr.stop()
    return qr.checks


# standalone run -------------------------------------------------------------------------------------


class Samples:
    def __init__(self) -> None:
        self.values: dict[str, dict[str, list[float]]] = {}

    def record(self, workload: str, system: str, value: float) -> None:
        self.values.setdefault(workload, {}).setdefault(system, []).append(value)
        print(f"  {workload:60s} {system:10s} {value:10.3f}", flush=True)


def report(samples: Samples, checks: dict[str, object], failed: list[str], minutes: float) -> Path:
    RESULTS.mkdir(exist_ok=True)
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d") + "-dimse-qr"
    if STEPS != tuple(int(v) for v in DEFAULT_STEPS.split(",")) or failed:
        stamp += "-partial"
    results, rows = {}, []
    for workload, systems in samples.values.items():
        stats = {
            s: {"median": statistics.median(v), "p99": percentile(v, 0.99), "min": min(v), "max": max(v), "n": len(v)}
            for s, v in systems.items()
        }
        ratio = stats["dicomflow"]["median"] / stats["orthanc"]["median"] if {"dicomflow", "orthanc"} <= set(stats) else None
        verdict = _verdict(workload, ratio, stats.get("dicomflow", {}).get("median", 0.0))  # targets: bench.summary
        results[workload] = {"systems": stats, "ratio_dicomflow_over_orthanc": ratio, "target": verdict}
        ms = workload.endswith(" ms")
        cell = {s: (number(st["median"]) + (f" / {number(st['p99'])}" if ms else "")) for s, st in stats.items()}
        n = "/".join(str(st["n"]) for st in stats.values())
        rows.append(
            f"| {workload} | {cell.get('dicomflow', '')} | {cell.get('orthanc', '')} | {number(ratio)} | {n} | {verdict} |"
        )
    header = (
        f"DIMSE query/retrieve, {stamp[:10]} on {machine()}; {SHARED_MACHINE}. dcmtk clients (findscu, movescu, "
        f"getscu, echoscu), one client run per sample (process start + association + operation + release); systems "
        f"interleaved. C-FIND study level: {ROUNDS} rounds of the selective queries (random existing values), "
        f"{ALL_ROUNDS} of 'all studies'; C-FIND image level {IMAGE_ROUNDS} runs; C-MOVE/C-GET of the study {REPS * RETRIEVE_ROUNDS} "
        f"repetitions after one warm-up, C-MOVE of one instance {REPS * SMALL_MOVE_ROUNDS}. dicomflow scp_processes={SCP_PROCESSES}, its studies bulk-loaded into the "
        f"index (COPY); Orthanc {orthanc_version()} (default settings, SQLite index) got the same identities as 27 KB MR "
        f"instances by dcmsend. Ratio = dicomflow median / Orthanc median. dicomflow code: {code_version()}. "
        f"Whole run {minutes:.0f} min."
    )
    document = {
        "date": stamp[:10],
        "machine": machine(),
        "code": code_version(),
        "note": SHARED_MACHINE,
        "reps": REPS,
        "rounds": ROUNDS,
        "all_rounds": ALL_ROUNDS,
        "image_rounds": IMAGE_ROUNDS,
        "steps": list(STEPS),
        "minutes": round(minutes, 1),
        "description": header,
        "checks": checks,
        "failed": failed,
        "results": results,
    }
    out = RESULTS / f"{stamp}.json"
    out.write_text(json.dumps(document, indent=2))
    table = "\n".join(
        [
            "| workload | dicomflow median / p99 | Orthanc median / p99 | dicomflow/Orthanc | n | target |",
            "|---|---|---|---|---|---|",
            *rows,
        ]
    )
    checks_md = "\n".join(f"- {key}: {json.dumps(value)}" for key, value in checks.items())
    failed_md = f"\n\nFailed parts (see the run's output): {', '.join(failed)}" if failed else ""
    (RESULTS / f"{stamp}.md").write_text(f"{header}\n\n{table}\n\nChecks:\n{checks_md}{failed_md}\n")
    print(table)
    return out


def code_version() -> str:
    """What dicomflow code ran: BENCH_CODE if given, else the repository's commit (+ "dirty")."""
    if os.environ.get("BENCH_CODE"):
        return os.environ["BENCH_CODE"]
    repo = Path(__file__).resolve().parents[1]
    try:
        commit = subprocess.run(
            ["git", "-C", str(repo), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(repo), "status", "--porcelain", "--", ".", ":!bench"], capture_output=True, text=True
        ).stdout.strip()
        return commit + (" with uncommitted changes outside bench/" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def orthanc_version() -> str:
    try:
        return subprocess.run(["Orthanc", "--version"], capture_output=True, text=True).stdout.split()[1]
    except (OSError, IndexError):
        return "(version unknown)"


def main() -> int:
    os.environ["DICOMFLOW_ENV"] = "test"
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))  # so the servers are stopped
    samples, failed = Samples(), []
    started = time.monotonic()
    print(f"bench.dimse_qr: steps {STEPS}, {ROUNDS} rounds ({ALL_ROUNDS} of all studies), {REPS} repetitions", flush=True)
    with tempfile.TemporaryDirectory(prefix="dicomflow-bench-qr-") as tmp:
        checks = workloads(Path(tmp), samples.record, REPS, failed)
    print(f"bench.dimse_qr: wrote {report(samples, checks, failed, (time.monotonic() - started) / 60)}")
    if failed:
        print(f"bench.dimse_qr: these parts failed (see the traceback above): {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
