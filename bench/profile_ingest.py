"""Issue 33 item 1: where each millisecond of CPU goes per acknowledged instance, receipt to study ready.

    .venv/bin/python -m bench.profile_ingest [--quick]

One throwaway stack (`dicomflow up` through RunningStack, as the benches start it), PostgreSQL given
pg_stat_statements between a first and second start (single-user mode on this stack's own data
directory: the production start passes no shared_preload_libraries, and the code is not changed).
For each workload (each its own tenant, so that study workflows never mix):

- CPU seconds per process (bench/nodes.py's CpuSplit, psutil user+system) from the first byte sent
  until every study of the tenant is `ready` (its workflow's JSON step done), per instance;
- py-spy (raw collapsed stacks, 200 Hz, non-blocking, idle frames off) attached by pid to the SCP
  actor(s), the workflow worker actor(s) and the Serve replica(s) for the same span;
- pg_stat_statements deltas (calls, rows, exec time per statement) and pg_stat_user_tables deltas
  (inserts, updates, HOT updates of `instance`);
- every study workflow's Temporal history: events by type, activities, signals.

Everything lands in a work directory (printed); bench/profile_report.py-like summarising is done by
`summarise()` below into a JSON next to the raw profiles.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil
import psycopg
from pydicom import dcmread

from bench.cpu_split import CpuSplit, process_label
from bench.ingest_cpu import wait_ready
from bench.nodes import write_studies
from bench.run import DATA, RESULTS, machine
from bench.workloads import Target, dcmsend_rate, files_of, stow_rate
from testkit.running_stack import RunningStack, stack_overrides
from testkit.temporal_waits import LOCAL_ACTIVITY_MARKER, client_for

PY_SPY = str(Path(sys.executable).parent / "py-spy")


def study_uids(files: list[Path]) -> set[str]:
    return {str(dcmread(p, stop_before_pixels=True, specific_tags=["StudyInstanceUID"]).StudyInstanceUID) for p in files}


def synthetic(folder: Path, studies: int, per_study: int) -> list[Path]:
    """`studies` studies of `per_study` instances: re-stamped copies of the 27 KB MR the benches use."""
    return write_studies(folder, studies, per_study, patient_prefix="PROF")


# PostgreSQL -------------------------------------------------------------------------------------


def enable_pg_stat_statements(stack: RunningStack) -> None:
    """With the stack down: preload pg_stat_statements, create it, let the app role read all stats."""
    from cluster.services import postgres as pg

    data = stack.settings.var_path / "postgres"
    with open(data / "postgresql.auto.conf", "a") as conf:
        conf.write("\nshared_preload_libraries = 'pg_stat_statements'\npg_stat_statements.track = 'all'\n")
    statement = "CREATE EXTENSION IF NOT EXISTS pg_stat_statements;\nGRANT pg_read_all_stats TO dicomflow_app;\n"
    result = subprocess.run(
        [
            *pg._as_root_prefix(),
            str(pg.PG_BIN / "postgres"),
            "--single",
            "-D",
            str(data),
            "-c",
            "unix_socket_directories=",
            "-c",
            "listen_addresses=",
            "dicomflow",
        ],
        input=statement,
        capture_output=True,
        text=True,
        timeout=120,
    )
    if result.returncode != 0:
        raise RuntimeError(result.stderr[-2000:])


def pg_snapshot(dsn: str) -> dict[str, Any]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        statements = {
            str(qid): {"query": q, "calls": c, "rows": r, "ms": t}
            for qid, q, c, r, t in conn.execute(
                "SELECT queryid, query, calls, rows, total_exec_time FROM pg_stat_statements WHERE queryid IS NOT NULL"
            ).fetchall()
        }
        tables = {
            name: {"ins": i, "upd": u, "hot": h, "del": d, "seq_scan": s, "idx_scan": x or 0}
            for name, i, u, h, d, s, x in conn.execute(
                "SELECT relname, n_tup_ins, n_tup_upd, n_tup_hot_upd, n_tup_del, seq_scan, idx_scan FROM pg_stat_user_tables"
            ).fetchall()
        }
        xact = conn.execute(
            "SELECT xact_commit, xact_rollback FROM pg_stat_database WHERE datname = current_database()"
        ).fetchone()
    return {"statements": statements, "tables": tables, "xact_commit": xact[0], "xact_rollback": xact[1]}


def pg_delta(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    statements = []
    for qid, s in after["statements"].items():
        b = before["statements"].get(qid, {"calls": 0, "rows": 0, "ms": 0.0})
        if s["calls"] > b["calls"]:
            statements.append(
                {
                    "query": " ".join(s["query"].split())[:300],
                    "calls": s["calls"] - b["calls"],
                    "rows": s["rows"] - b["rows"],
                    "ms": s["ms"] - b["ms"],
                }
            )
    statements.sort(key=lambda s: -s["ms"])
    tables = {}
    for name, t in after["tables"].items():
        b = before["tables"].get(name, dict.fromkeys(t, 0))
        d = {k: t[k] - b[k] for k in t}
        if any(d[k] for k in ("ins", "upd", "del")):
            tables[name] = d
    return {
        "statements": statements,
        "tables": tables,
        "commits": after["xact_commit"] - before["xact_commit"],
        "rollbacks": after["xact_rollback"] - before["xact_rollback"],
    }


def pg_activity_sampler(dsn: str, stop: list[bool], out: collections.Counter) -> None:
    """pg_stat_activity every 100 ms: what the server's backends are doing or waiting on."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        while not stop[0]:
            for state, wtype, wevent, query in conn.execute(
                "SELECT state, wait_event_type, wait_event, left(query, 80) FROM pg_stat_activity "
                "WHERE backend_type = 'client backend' AND pid <> pg_backend_pid() AND state <> 'idle'"
            ).fetchall():
                out[f"{state} | {wtype}:{wevent} | {' '.join((query or '').split())[:80]}"] += 1
            out["__samples__"] += 1
            time.sleep(0.1)


# Temporal ---------------------------------------------------------------------------------------


async def histories(stack: RunningStack, tenant: str, studies: set[str]) -> list[dict[str, Any]]:
    from temporalio.api.enums.v1 import EventType

    client = await client_for(stack.settings)
    out = []
    for study in sorted(studies):
        wid = f"study:{tenant}:{study}"
        events: collections.Counter = collections.Counter()
        runs = 0
        run_id: str | None = None
        # follow the chain backwards is not possible; the latest run's history plus how many runs exist
        async for _ in client.list_workflows(f'WorkflowId = "{wid}"'):
            runs += 1
        try:
            history = await client.get_workflow_handle(wid, run_id=run_id).fetch_history()
        except Exception as err:  # noqa: BLE001 - reported, the others still counted
            out.append({"workflow_id": wid, "error": str(err)[:200], "runs": runs, "events": 0, "by_type": {}, "activities": []})
            continue
        activities = []
        for e in history.events:
            events[EventType.Name(e.event_type).removeprefix("EVENT_TYPE_")] += 1
            if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
                activities.append(e.activity_task_scheduled_event_attributes.activity_type.name)
            elif (
                e.event_type == EventType.EVENT_TYPE_MARKER_RECORDED
                and e.marker_recorded_event_attributes.marker_name == LOCAL_ACTIVITY_MARKER
            ):
                data = e.marker_recorded_event_attributes.details["data"].payloads[0].data
                activities.append("local:" + json.loads(data)["activity_type"])
        out.append(
            {"workflow_id": wid, "runs": runs, "events": sum(events.values()), "by_type": dict(events), "activities": activities}
        )
    return out


# processes and py-spy ---------------------------------------------------------------------------


def stack_processes(stack: RunningStack) -> list[psutil.Process]:
    root = psutil.Process(stack.process.pid)
    return [root, *root.children(recursive=True)]


def profile_targets(stack: RunningStack) -> dict[str, int]:
    """pid per role: the SCP actor(s), the workflow worker actor(s), the Serve replica(s)."""
    targets = {}
    for proc in stack_processes(stack):
        try:
            name = proc.name()
        except psutil.NoSuchProcess:
            continue
        if "DimseScpActor" in name:
            targets[f"scp-{proc.pid}"] = proc.pid
        elif "WorkflowWorkerActor" in name:
            targets[f"worker-{proc.pid}"] = proc.pid
        elif name.startswith("ray::ServeReplica") and "dicomweb" in name.lower():
            targets[f"serve-{proc.pid}"] = proc.pid
    return targets


def start_py_spy(targets: dict[str, int], outdir: Path, rate: int) -> list[subprocess.Popen]:
    outdir.mkdir(parents=True, exist_ok=True)
    procs = []
    for label, pid in targets.items():
        procs.append(
            subprocess.Popen(
                [
                    PY_SPY,
                    "record",
                    "--pid",
                    str(pid),
                    "--rate",
                    str(rate),
                    "--format",
                    "raw",
                    "--nonblocking",
                    "--gil",
                    "--threads",
                    "--output",
                    str(outdir / f"{label}.txt"),
                ],
                stdout=subprocess.DEVNULL,
                stderr=open(outdir / f"{label}.log", "w"),  # noqa: SIM115
            )
        )
    return procs


def stop_py_spy(procs: list[subprocess.Popen]) -> None:
    for proc in procs:
        proc.send_signal(signal.SIGINT)
    for proc in procs:
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()


# the run ----------------------------------------------------------------------------------------


def stored_studies(dsn: str, tenant: str) -> set[str]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        return {row[0] for row in conn.execute("SELECT DISTINCT study_uid FROM instance WHERE tenant = %s", (tenant,))}


def instance_count(dsn: str, tenant: str) -> int:
    with psycopg.connect(dsn, autocommit=True) as conn:
        return conn.execute("SELECT count(*) FROM instance WHERE tenant = %s", (tenant,)).fetchone()[0]


class Profiler:
    def __init__(self, workdir: Path, rate: int) -> None:
        self.workdir = workdir
        self.rate = rate
        ae_table = {f"PROF{i}": {"tenant": f"prof{i}", "services": ["store"]} for i in range(1, 30)}
        overrides = stack_overrides(workdir / "var", ae_table=ae_table, stable_seconds=1.0, scp_processes=2)
        self.stack = RunningStack(overrides, workdir / "up.log")
        self.tenant = 0
        self.results: dict[str, Any] = {"machine": machine(), "workloads": []}

    @property
    def dsn(self) -> str:
        return self.stack.settings.effective_postgres_dsn()

    def start(self) -> None:
        t = time.monotonic()
        self.stack.start()
        self.stack.stop()
        enable_pg_stat_statements(self.stack)
        self.stack.start()
        print(f"stack up with pg_stat_statements in {time.monotonic() - t:.0f} s", flush=True)
        for proc in stack_processes(self.stack):
            try:
                print(f"  {proc.pid:7d} {process_label(proc, 'head'):30s} {proc.name()[:70]}")
            except psutil.NoSuchProcess:
                pass

    def idle(self, seconds: float = 20) -> dict[str, float]:
        split = CpuSplit({"head": psutil.Process(self.stack.process.pid)})
        split.start()
        time.sleep(seconds)
        return {k: v / seconds * 1000 for k, v in split.stop().items()}  # ms CPU per s idle

    def workload(self, name: str, files: list[Path], kind: str, parallel: int) -> dict[str, Any]:
        self.tenant += 1
        ae, tenant = f"PROF{self.tenant}", f"prof{self.tenant}"
        studies = study_uids(files)
        print(f"{name}: {len(files)} files, {len(studies)} studies, tenant {tenant}", flush=True)
        spy = start_py_spy(profile_targets(self.stack), self.workdir / "pyspy" / name, self.rate)
        time.sleep(1.0)  # py-spy attached
        pg_before = pg_snapshot(self.dsn)
        load_before = os.getloadavg()
        activity: collections.Counter = collections.Counter()
        stop = [False]
        import threading

        sampler = threading.Thread(target=pg_activity_sampler, args=(self.dsn, stop, activity), daemon=True)
        split = CpuSplit({"head": psutil.Process(self.stack.process.pid)})
        split.start()
        sampler.start()
        started = time.monotonic()
        if kind == "dimse":
            rate = dcmsend_rate(ae, self.stack.settings.dimse.port, files, parallel)
        else:
            target = Target("dicomflow", self.stack.url("/dicomweb"), ae, 0, {"x-tenant": tenant})
            rate = stow_rate(target, files, parallel)
        sent = time.monotonic() - started
        studies = stored_studies(self.dsn, tenant)  # every acknowledged one: a refused file starts no study
        ready_after, _ = wait_ready(self.dsn, tenant, len(studies))
        done = time.monotonic() - started
        cpu = split.stop()
        stop[0] = True
        sampler.join()
        pg_after = pg_snapshot(self.dsn)
        stop_py_spy(spy)
        stored = instance_count(self.dsn, tenant)
        hist = asyncio.run(histories(self.stack, tenant, studies))
        result = {
            "name": name,
            "kind": kind,
            "parallel": parallel,
            "files": len(files),
            "instances": stored,
            "studies": len(studies),
            "instances_per_s": rate,
            "send_s": sent,
            "ready_after_send_s": ready_after,
            "total_s": done,
            "loadavg_before": load_before,
            "loadavg_after": os.getloadavg(),
            "cpu_s": cpu,
            "cpu_ms_per_instance": {k: 1000 * v / stored for k, v in cpu.items()},
            "pg": pg_delta(pg_before, pg_after),
            "pg_activity": dict(activity.most_common(40)),
            "temporal": hist,
        }
        total = sum(result["cpu_ms_per_instance"].values())
        print(f"  {rate:.1f} inst/s, ready {ready_after:.1f} s after the last send, {total:.1f} CPU ms/instance:", flush=True)
        for k, v in list(result["cpu_ms_per_instance"].items())[:10]:
            print(f"    {k:35s} {v:7.2f}")
        (self.workdir / f"{name}.json").write_text(json.dumps(result, indent=1))
        self.results["workloads"].append(result)
        return result

    def stop(self) -> None:
        try:
            self.stack.stop()
        except Exception as err:  # noqa: BLE001
            print(f"stop: {err}")


def orthanc_cpu(workdir: Path) -> dict[str, Any]:
    """Orthanc's CPU ms per instance on the same files and clients (C-STORE 1 and 4 associations, STOW-RS 4 threads):
    it stores, indexes (SQLite) and answers in one process, so its process CPU is all its work."""
    from bench.orthanc import Orthanc
    from testkit.running_stack import free_port

    real = files_of(DATA)
    out: dict[str, Any] = {}
    orthanc = Orthanc(workdir / "orthanc", free_port(), free_port())
    try:
        for name, kind, parallel in (("cstore-1assoc", "dimse", 1), ("cstore-4assoc", "dimse", 4), ("stow-4threads", "stow", 4)):
            orthanc.stop()
            orthanc.start(fresh=True)
            proc = psutil.Process(orthanc.process.pid)
            before = proc.cpu_times()
            if kind == "dimse":
                rate = dcmsend_rate("ORTHANC", orthanc.dicom_port, real, parallel)
            else:
                rate = stow_rate(Target("orthanc", orthanc.dicomweb, "ORTHANC", 0, {}), real, parallel)
            time.sleep(2)  # its jobs settle
            after = proc.cpu_times()
            cpu = (after.user + after.system) - (before.user + before.system)
            out[name] = {"instances_per_s": rate, "cpu_ms_per_instance": 1000 * cpu / len(real), "files": len(real)}
            print(f"orthanc {name}: {rate:.1f} inst/s, {out[name]['cpu_ms_per_instance']:.2f} CPU ms/instance", flush=True)
    finally:
        orthanc.stop()
    return out


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rate", type=int, default=200)
    parser.add_argument("--only", default="")
    parser.add_argument("--workdir", default="")
    parser.add_argument("--orthanc", action="store_true", help="only Orthanc's CPU per instance on the same data")
    parser.add_argument("--report", default="", help="only write the report of this finished work directory")
    args = parser.parse_args()
    if args.orthanc:
        workdir = Path(args.workdir or tempfile.mkdtemp(prefix="dicomflow-profile-orthanc-"))
        (workdir / "orthanc.json").write_text(json.dumps(orthanc_cpu(workdir), indent=1))
        return 0
    if args.report:
        report(Path(args.report), Path(args.workdir or Path(args.report) / "report.md"))
        return 0
    os.environ["DICOMFLOW_ENV"] = "test"
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="dicomflow-profile-"))
    workdir.mkdir(parents=True, exist_ok=True)
    print(f"profile: work directory {workdir}", flush=True)
    real = files_of(DATA)
    plan = [
        ("cstore-1assoc", real, "dimse", 1),
        ("cstore-4assoc", real, "dimse", 4),
        ("stow-4threads", real, "stow", 4),
        ("stow-1thread", real, "stow", 1),
        ("cstore-4assoc-300x1", synthetic(workdir / "s300x1", 300, 1), "dimse", 4),
        ("cstore-4assoc-30x10", synthetic(workdir / "s30x10", 30, 10), "dimse", 4),
        ("cstore-4assoc-3x100", synthetic(workdir / "s3x100", 3, 100), "dimse", 4),
    ]
    if args.only:
        plan = [p for p in plan if p[0] in args.only.split(",")]
    profiler = Profiler(workdir, args.rate)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    try:
        profiler.start()
        profiler.results["idle_ms_per_s"] = profiler.idle()
        print("idle CPU ms/s:", json.dumps({k: round(v, 1) for k, v in profiler.results["idle_ms_per_s"].items()}), flush=True)
        for name, files, kind, parallel in plan:
            profiler.workload(name, files, kind, parallel)
    finally:
        profiler.stop()
        (workdir / "results.json").write_text(json.dumps(profiler.results, indent=1))
        RESULTS.mkdir(exist_ok=True)
    print(f"profile: wrote {workdir / 'results.json'}")
    return 0


# the report -------------------------------------------------------------------------------------

# (step, pattern over the whole stack); the first that matches names a sample. Cross-cutting costs
# (logging) first, then the pipeline's steps from the most specific in.
STEPS: list[tuple[str, str]] = [
    ("logging", r"logging/__init__|logging/handlers|AuditMiddleware|audit/"),
    ("JSON generate: pydicom dcmread of the stored blob", r"_write_series_json.*(dcmread|filereader)"),
    ("JSON generate: second header walk (pixel_data_vr)", r"_write_series_json.*pixel_data_vr"),
    ("JSON generate: gzip", r"_write_series_json.*(gzip|zlib)"),
    ("JSON generate: json.dumps", r"_write_series_json.*json/(encoder|__init__)"),
    ("JSON generate: DICOM JSON conversion", r"_write_series_json.*dicom_json"),
    ("JSON generate: blob read/write", r"_write_series_json"),
    ("verify: sha256 read-back of each blob", r"verify_blob|hash_file.*verify"),
    ("transcode", r"_write_uncompressed|transcode"),
    (
        "receipt: header parse/validate (read_header, extract)",
        r"Receiver\.prepare|read_header|attributes\.py.*extract|Ingest\.prepare",
    ),
    (
        "receipt: spool write of the received dataset (pynetdicom/fence)",
        r"dataset_path|write_file_meta|filewriter|_TemporaryFileWrapper|mkstemp|dimse/store",
    ),
    ("receipt: staging (sha256 of the spool)", r"stage_file|hash_file|new_spool"),
    ("receipt: blob commit (rename + fsync)", r"LocalBlobStore\.commit|_fsync"),
    ("receipt: index transaction (psycopg)", r"Receiver\._attempt|insert_instance|lock_study"),
    ("signal/outbox (signal-with-start, mark_signalled)", r"signaller|Signaller|mark_signalled|Ingest\.flush|_flush_every"),
    ("STOW: multipart parse/request body", r"multipart|Multipart|media\.py|stow"),
    ("HTTP framework (uvicorn/starlette/fastapi/Serve)", r"uvicorn|starlette|fastapi|ray/serve"),
    ("SQL (psycopg; in the worker: the activities' statements)", r"lifecycle\.py|psycopg"),
    (
        "Temporal: workflow tasks (sandbox, replay)",
        r"temporalio/worker/(_workflow|workflow_sandbox)|_workflow_instance|temporal_workflow",
    ),
    ("Temporal SDK: activity/bridge/payload conversion", r"temporalio"),
    ("DIMSE protocol (pynetdicom PDUs, DUL, fence)", r"pynetdicom|dimse/"),
    ("asyncio event loop", r"asyncio|uvloop|loop_thread"),
    ("Ray runtime", r"ray/"),
    ("pydicom (elsewhere)", r"pydicom"),
]
IDLE_LEAVES = re.compile(
    r"^(select|poll|epoll|sleep|wait|Condition\.wait|Event\.wait|Worker\.main_loop|_worker|Thread\.run|"
    r"BusyAwareDUL\.wait_for_peer|AssociationServer\.service_actions|_PollLikeSelector\.select|EpollSelector\.select)\b"
)


def read_raw(path: Path) -> collections.Counter:
    stacks: collections.Counter = collections.Counter()
    for line in path.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        frames = stack.split(";")[1:]  # the first names the thread
        stacks[";".join(re.sub(r" \(([^:]*):\d+\)", r" (\1)", f) for f in frames)] += int(n)
    return stacks


def classify(stacks: collections.Counter) -> tuple[collections.Counter, collections.Counter, collections.Counter, int]:
    steps: collections.Counter = collections.Counter()
    selfc: collections.Counter = collections.Counter()
    incl: collections.Counter = collections.Counter()
    idle = 0
    for stack, n in stacks.items():
        leaf = stack.rsplit(";", 1)[-1]
        if not stack or IDLE_LEAVES.match(leaf):
            idle += n
            continue
        selfc[leaf] += n
        for frame in set(stack.split(";")):
            incl[frame] += n
        steps[next((name for name, pattern in STEPS if re.search(pattern, stack)), "other")] += n
    return steps, selfc, incl, idle


def role_of(label: str) -> str:
    return label.split("-")[0]


PROCESS_OF_ROLE = {"scp": "head DimseScpActor", "worker": "head WorkflowWorkerActor", "serve": "head ServeReplica"}


def report(workdir: Path, out: Path) -> None:
    results = json.loads((workdir / "results.json").read_text())
    idle = results.get("idle_ms_per_s", {})
    lines = [
        "# Ingest profile, issue 33 item 1: CPU per acknowledged instance, receipt to study ready",
        "",
        f"Machine: {results['machine']}. Made by `bench/profile_ingest.py` (stack as the benches start it: "
        "`RunningStack`, `scp_processes=2`, one workflow worker, one Serve replica, `stable_seconds=1`, "
        "`transcode_policy=keep`).",
        "",
    ]
    workloads = results["workloads"]
    # process table
    labels: list[str] = []
    for w in workloads:
        for k in w["cpu_ms_per_instance"]:
            if k not in labels:
                labels.append(k)
    lines += ["## CPU ms per instance, per process (psutil user+system, first byte sent to every study `ready`)", ""]
    lines.append("| process | idle ms/s | " + " | ".join(w["name"] for w in workloads) + " |")
    lines.append("|---|---|" + "---|" * len(workloads))
    for label in labels:
        lines.append(
            f"| {label.removeprefix('head ')} | {idle.get(label, 0):.1f} | "
            + " | ".join(f"{w['cpu_ms_per_instance'].get(label, 0):.2f}" for w in workloads)
            + " |"
        )
    lines.append(
        "| **total** | "
        + f"{sum(idle.values()):.0f} | "
        + " | ".join(f"**{sum(w['cpu_ms_per_instance'].values()):.1f}**" for w in workloads)
        + " |"
    )
    lines.append(
        "| total less idle rate x duration | | "
        + " | ".join(
            f"{sum(w['cpu_ms_per_instance'].values()) - sum(idle.values()) * w['total_s'] / w['instances']:.1f}"
            for w in workloads
        )
        + " |"
    )
    lines.append("| instances / studies | | " + " | ".join(f"{w['instances']} / {w['studies']}" for w in workloads) + " |")
    lines.append("| instances/s while sending | | " + " | ".join(f"{w['instances_per_s']:.1f}" for w in workloads) + " |")
    lines.append("| s from last send to all ready | | " + " | ".join(f"{w['ready_after_send_s']:.1f}" for w in workloads) + " |")
    lines.append(
        "| load average (1 min) before / after | | "
        + " | ".join(f"{w['loadavg_before'][0]:.1f} / {w['loadavg_after'][0]:.1f}" for w in workloads)
        + " |"
    )
    lines.append("")
    orthanc_file = workdir / "orthanc.json"
    if orthanc_file.exists():
        orthanc = json.loads(orthanc_file.read_text())
        lines += [
            "Orthanc on the same files and clients (`--orthanc`: its one process's psutil CPU, fresh storage each run):",
            "",
            "| workload | Orthanc CPU ms/instance | Orthanc instances/s | dicomflow total (less idle) | ratio |",
            "|---|---|---|---|---|",
        ]
        for name, o in orthanc.items():
            w = next((x for x in workloads if x["name"] == name), None)
            ours = (
                (sum(w["cpu_ms_per_instance"].values()) - sum(idle.values()) * w["total_s"] / w["instances"])
                if w
                else float("nan")
            )
            lines.append(
                f"| {name} | {o['cpu_ms_per_instance']:.2f} | {o['instances_per_s']:.1f} | {ours:.1f} | {ours / o['cpu_ms_per_instance']:.1f}x |"
            )
        lines.append("")
    # steps from py-spy
    lines += ["## CPU ms per instance, per step (py-spy samples of the process, scaled to its psutil CPU)", ""]
    step_tables: dict[str, dict[str, float]] = {}
    detail: list[str] = []
    for w in workloads:
        folder = workdir / "pyspy" / w["name"]
        per_role: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
        role_self: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
        role_incl: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
        for raw in sorted(folder.glob("*.txt")):
            steps, selfc, incl, _ = classify(read_raw(raw))
            role = role_of(raw.stem)
            per_role[role].update(steps)
            role_self[role].update(selfc)
            role_incl[role].update(incl)
        table: dict[str, float] = {}
        for role, steps in per_role.items():
            busy = sum(steps.values())
            cpu = w["cpu_ms_per_instance"].get(PROCESS_OF_ROLE[role], 0.0)
            if not busy or not cpu:
                continue
            for step, n in steps.items():
                table[f"{role}: {step}"] = cpu * n / busy
            detail.append(f"### {w['name']}, {role} ({busy} busy samples = {cpu:.2f} ms/instance)\n")
            detail.append(
                "top self (ms/instance): "
                + "; ".join(f"`{k}` {cpu * n / busy:.2f}" for k, n in role_self[role].most_common(12))
                + "\n"
            )
            detail.append(
                "top inclusive (ms/instance): "
                + "; ".join(
                    f"`{k}` {cpu * n / busy:.2f}"
                    for k, n in role_incl[role].most_common(40)
                    if not re.match(
                        r"Thread\.|_bootstrap|_worker|_WorkItem|<module>|run \(|Handle\._run|_run_once|run_forever|run_until", k
                    )
                )
                + "\n"
            )
        step_tables[w["name"]] = table
    keys = sorted({k for t in step_tables.values() for k in t}, key=lambda k: -max(t.get(k, 0) for t in step_tables.values()))
    lines.append("| process: step | " + " | ".join(w["name"] for w in workloads) + " |")
    lines.append("|---|" + "---|" * len(workloads))
    for k in keys:
        lines.append(f"| {k} | " + " | ".join(f"{step_tables[w['name']].get(k, 0):.2f}" for w in workloads) + " |")
    lines.append("")
    # PostgreSQL
    lines += ["## PostgreSQL (pg_stat_statements and pg_stat_user_tables deltas, per instance)", ""]
    lines.append(
        "| workload | statements/instance | exec ms/instance | commits/instance | instance: ins / upd / HOT upd per instance | study upd/instance | series upd/instance |"
    )
    lines.append("|---|---|---|---|---|---|---|")
    for w in workloads:
        pg, n = w["pg"], w["instances"]
        own = [
            s
            for s in pg["statements"]
            if "pg_stat_activity" not in s["query"]
            and "pg_stat_statements" not in s["query"]
            and "pg_stat_user_tables" not in s["query"]
            and "pg_stat_database" not in s["query"]
        ]
        t = pg["tables"]
        inst = t.get("instance", {"ins": 0, "upd": 0, "hot": 0})
        lines.append(
            f"| {w['name']} | {sum(s['calls'] for s in own) / n:.1f} | {sum(s['ms'] for s in own) / n:.2f} | {pg['commits'] / n:.1f} | "
            f"{inst['ins'] / n:.2f} / {inst['upd'] / n:.2f} / {inst['hot'] / n:.2f} | "
            f"{t.get('study', {}).get('upd', 0) / n:.2f} | {t.get('series', {}).get('upd', 0) / n:.2f} |"
        )
    lines.append("")
    w = next((x for x in workloads if x["name"] == "cstore-4assoc"), workloads[0])
    lines += [
        f"Top statements in {w['name']} (per instance):",
        "",
        "| calls/inst | ms/inst | rows/call | statement |",
        "|---|---|---|---|",
    ]
    for s in w["pg"]["statements"][:25]:
        lines.append(
            f"| {s['calls'] / w['instances']:.2f} | {s['ms'] / w['instances']:.3f} | {s['rows'] / max(s['calls'], 1):.1f} | `{s['query'][:160]}` |"
        )
    lines.append("")
    # Temporal
    lines += [
        "## Temporal: study workflow histories",
        "",
        "| workload | studies | instances/study (median) | events/study (mean) | runs/study | activities (task queue) / local per study | signals/study | events by type (all studies) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for w in workloads:
        hist = w["temporal"]
        if not hist:
            continue
        events = sum(h["events"] for h in hist) / len(hist)
        acts = sum(sum(1 for a in h["activities"] if not a.startswith("local:")) for h in hist) / len(hist)
        local = sum(sum(1 for a in h["activities"] if a.startswith("local:")) for h in hist) / len(hist)
        signals = sum(h["by_type"].get("WORKFLOW_EXECUTION_SIGNALED", 0) for h in hist) / len(hist)
        runs = sum(h["runs"] for h in hist) / len(hist)
        by_type: collections.Counter = collections.Counter()
        for h in hist:
            by_type.update(h["by_type"])
        lines.append(
            f"| {w['name']} | {len(hist)} | {w['instances'] / w['studies']:.0f} | {events:.1f} | {runs:.1f} | {acts:.1f} / {local:.1f} | {signals:.1f} | "
            + ", ".join(f"{k.lower()} {v / len(hist):.1f}" for k, v in by_type.most_common())
            + " |"
        )
    lines.append("")
    big = [
        (h["events"], h["by_type"].get("WORKFLOW_EXECUTION_SIGNALED", 0), h["workflow_id"])
        for w in workloads
        for h in w["temporal"]
    ]
    lines.append("Largest histories (events, signals, id): " + "; ".join(f"{e}, {s}, `{i[:60]}`" for e, s, i in sorted(big)[-6:]))
    lines.append("")
    # pg_stat_activity
    lines += ["## pg_stat_activity samples (every 100 ms, non-idle client backends), top waits", ""]
    for w in workloads:
        act = w["pg_activity"]
        samples = act.pop("__samples__", 1)
        lines.append(f"- {w['name']} ({samples} samples): " + "; ".join(f"{v} x `{k}`" for k, v in list(act.items())[:6]))
    lines.append("")
    lines += ["## py-spy detail", "", *detail]
    out.write_text("\n".join(lines) + "\n")
    print(out.read_text())


if __name__ == "__main__":
    raise SystemExit(main())
