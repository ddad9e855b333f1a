"""Forwarding to dcmtk's storescp, dicomflow side by side with Orthanc (issue 32 item 6).

The same real data for every run: the 520-file Toshiba MR series of dcm_qa_toshiba, restamped into
a new study per run (testkit.restamp.as_new_study), sent with `dcmsend` over one association.

- dicomflow: forwarding rules to an AE-table entry that is a `storescp` of its own, one rule with
  `when = "instance"`, one with `when = "study"` (each matches its own PatientID, so every run goes
  through one rule);
- Orthanc: its own routing, Lua `OnStoredInstance` calling `SendToModality` to another `storescp`
  (the same program and options).

Per run: instances/s from the first send to the last arrival at storescp; per instance, the delay
from its receipt (the time dcmsend logged its C-STORE response, read from dcmtk's log with ms
timestamps, the same for both systems) to its arrival (the mtime of the file storescp wrote). For
dicomflow also where the time goes, from the index: `instance.received_at`, the `retrieve` round
that sent it (created when the forward listed what was owed, finished when its books closed).
Systems alternate over the repetitions; each run starts once the previous one is done (its study
and forward workflows completed).

    .venv/bin/python -m bench.forwarding          # bench/results/<date>-forwarding.json
    BENCH_FWD_REPS=1 .venv/bin/python -m bench.forwarding   # a trial (-partial file)
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psycopg
from temporalio.client import WorkflowExecutionStatus

from bench.dimse_qr import code_version, orthanc_version
from bench.orthanc import Orthanc
from bench.qido_scale import percentile
from bench.run import DATA, RESULTS, SCP_PROCESSES, machine
from bench.workloads import files_of
from contract import names
from testkit.restamp import as_new_study
from testkit.running_stack import RunningStack, free_port, stack_overrides
from testkit.temporal_waits import client_for, wait_completed

DEFAULT_REPS = 5
REPS = int(os.environ.get("BENCH_FWD_REPS", str(DEFAULT_REPS)))
SENDER_AE = "FWD_MOD"  # the modality: dcmsend's calling AE, a store-only AE of tenant "fwd"
DEST_AE = "STORESCP"
TENANT = "fwd"
STABLE_SECONDS = 1.0  # as the other benchmarks run (the default is 5): what a `when = "study"` forward waits for
ENV = {**os.environ, "TCP_NODELAY": "1"}  # dcmtk's senders and storescp, as bench.workloads gives dcmsend
# each C-STORE response with a ms timestamp: dcmnet at DEBUG prints the response's Affected SOP Instance UID
DCMTK_LOG_CONFIG = """\
log4cplus.rootLogger = INFO, console
log4cplus.logger.dcmtk.dcmnet = DEBUG
log4cplus.appender.console = log4cplus::ConsoleAppender
log4cplus.appender.console.layout = log4cplus::PatternLayout
log4cplus.appender.console.layout.ConversionPattern = %D{%s.%q} %p %m%n
"""
ORTHANC_LUA = """\
function OnStoredInstance(instanceId, tags, metadata, origin)
   SendToModality(instanceId, 'STORESCP')
end
"""
RULES = {  # mode -> rule name; the PatientID a run's study carries selects the rule
    "instance": "on-instance",
    "study": "on-study",
}
# run label -> (target on dicomflow/Orthanc instances/s, target on dicomflow's median delay in s or None)
TARGETS: dict[str, tuple[float, float | None]] = {
    "dicomflow when=instance": (1.0, 1.0),
    "dicomflow when=study": (1.0, None),
}


async def history_spans(settings: Any, workflow_id: str, zero: float) -> list[dict[str, Any]]:
    """A workflow's latest run from its Temporal history: when its timers, activities and local
    activities ran, in seconds after `zero` (the last C-STORE response); signals counted, not listed."""
    client = await client_for(settings)
    history = await client.get_workflow_handle(workflow_id).fetch_history()
    scheduled: dict[int, tuple[str, float]] = {}
    spans: list[dict[str, Any]] = []
    signals: list[float] = []
    for event in history.events:
        at = event.event_time.ToDatetime(tzinfo=dt.timezone.utc).timestamp() - zero
        if event.HasField("workflow_execution_started_event_attributes"):
            spans.append({"event": "workflow started", "at_s": round(at, 3)})
        elif event.HasField("workflow_execution_signaled_event_attributes"):
            signals.append(at)
        elif event.HasField("timer_started_event_attributes"):
            scheduled[event.event_id] = ("timer", at)
        elif event.HasField("timer_fired_event_attributes"):
            _, begun = scheduled.get(event.timer_fired_event_attributes.started_event_id, ("timer", at))
            spans.append({"event": "timer", "from_s": round(begun, 3), "to_s": round(at, 3)})
        elif event.HasField("activity_task_scheduled_event_attributes"):
            scheduled[event.event_id] = (event.activity_task_scheduled_event_attributes.activity_type.name, at)
        elif event.HasField("activity_task_completed_event_attributes"):
            name, begun = scheduled.get(event.activity_task_completed_event_attributes.scheduled_event_id, ("?", at))
            spans.append({"event": f"activity {name}", "from_s": round(begun, 3), "to_s": round(at, 3)})
        elif event.HasField("marker_recorded_event_attributes"):
            name = "?"
            data = event.marker_recorded_event_attributes.details.get("data")
            if data is not None and data.payloads:
                try:
                    name = json.loads(data.payloads[0].data).get("activity_type", "?")
                except ValueError:
                    pass
            spans.append({"event": f"local activity {name}", "at_s": round(at, 3)})
        elif event.HasField("workflow_execution_completed_event_attributes"):
            spans.append({"event": "workflow completed", "at_s": round(at, 3)})
    if signals:
        spans.insert(0, {"event": f"{len(signals)} signals", "from_s": round(min(signals), 3), "to_s": round(max(signals), 3)})
    return spans


NOTE = "a 2-core machine: both systems, both storescps and the sender share it; systems alternate over the repetitions"


def patient_id(mode: str) -> str:
    return f"FWD-{mode.upper()}"


def forward_rules() -> list[dict[str, Any]]:
    return [
        {"name": rule, "tenant": TENANT, "when": mode, "match": {"PatientID": patient_id(mode)}, "to": {"ae": DEST_AE}}
        for mode, rule in RULES.items()
    ]


class Storescp:
    """dcmtk's storescp as a forward destination; each study lands in a folder of its own (-su)."""

    def __init__(self, workdir: Path, name: str) -> None:
        self.out = workdir / f"storescp-{name}"
        self.port = free_port()
        self.log = workdir / f"storescp-{name}.log"
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        with open(self.log, "wb") as log:
            self.process = subprocess.Popen(
                ["storescp", "-aet", DEST_AE, "-od", str(self.out), "-su", "st", str(self.port)],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=ENV,
            )
        time.sleep(0.5)
        if self.process.poll() is not None:
            raise RuntimeError(f"storescp on port {self.port} exited: {self.log.read_text()[-500:]}")

    def arrivals(self, study_uid: str) -> dict[str, float]:
        """SOP Instance UID -> the time storescp wrote its file (storescp names it {Modality}.{SOP UID})."""
        folder = self.out / f"st_{study_uid}"
        if not folder.exists():
            return {}
        return {p.name.split(".", 1)[1]: p.stat().st_mtime for p in folder.iterdir() if p.is_file()}

    def wait_for(self, study_uid: str, count: int, timeout: float = 900) -> dict[str, float]:
        deadline = time.monotonic() + timeout
        while len(self.arrivals(study_uid)) < count:
            if time.monotonic() > deadline:
                raise RuntimeError(f"storescp got {len(self.arrivals(study_uid))} of {count} instances in {timeout} s")
            time.sleep(0.1)
        time.sleep(0.5)  # the last file written whole (storescp answers after it closes the file)
        return self.arrivals(study_uid)

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(10)
            self.process = None


def responses(log: str) -> dict[str, float]:
    """SOP Instance UID -> epoch seconds of its C-STORE response, from dcmsend's log (DCMTK_LOG_CONFIG)."""
    out: dict[str, float] = {}
    incoming = False
    for line in log.splitlines():
        if "INCOMING DIMSE MESSAGE" in line:
            incoming = True
        elif "END DIMSE MESSAGE" in line:
            incoming = False
        elif incoming:
            found = re.match(r"^(\d+\.\d+) DEBUG Affected SOP Instance UID\s*: (\S+)", line)
            if found:
                out[found.group(2)] = float(found.group(1))
    return out


def dcmsend(workdir: Path, called_ae: str, port: int, files: list[Path]) -> tuple[float, float, dict[str, float]]:
    """(started, ended, SOP UID -> response time), epoch seconds: one association, every file."""
    config = workdir / "dcmsend-log.cfg"
    config.write_text(DCMTK_LOG_CONFIG)
    log = workdir / "dcmsend.log"
    started = time.time()
    with open(log, "wb") as sink:
        code = subprocess.run(
            ["dcmsend", "-lc", str(config), "-aet", SENDER_AE, "-aec", called_ae, "127.0.0.1", str(port), *map(str, files)],
            stdout=sink,
            stderr=subprocess.STDOUT,
            env=ENV,
            timeout=900,
        ).returncode
    ended = time.time()
    answered = responses(log.read_text())
    if code != 0 or len(answered) != len(files):
        raise RuntimeError(f"dcmsend to {called_ae} exited {code}, {len(answered)} responses: {log.read_text()[-800:]}")
    return started, ended, answered


def write_study(workdir: Path, files: list[Path], pid: str) -> tuple[str, list[Path]]:
    """The data restamped into a new study (UIDs new, PatientID `pid`), as files for dcmsend."""
    from pydicom import dcmread

    workdir.mkdir(parents=True, exist_ok=True)
    paths = []
    for number, payload in enumerate(as_new_study(files, PatientID=pid, PatientName="Forward^Bench")):
        paths.append(workdir / f"{number:04d}.dcm")
        paths[-1].write_bytes(payload)
    return str(dcmread(paths[0], stop_before_pixels=True).StudyInstanceUID), paths


def _stats(values: list[float]) -> dict[str, float]:
    return {
        "median": round(statistics.median(values), 3),
        "p95": round(percentile(values, 0.95), 3),
        "min": round(min(values), 3),
        "max": round(max(values), 3),
    }


def measured(started: float, sent: float, answered: dict[str, float], arrived: dict[str, float]) -> dict[str, Any]:
    if set(answered) != set(arrived):
        raise RuntimeError(
            f"{len(set(answered) - set(arrived))} instances answered but not arrived, {len(set(arrived) - set(answered))} arrived unasked"
        )
    last = max(arrived.values())
    return {
        "instances": len(arrived),
        "instances_per_second": round(len(arrived) / (last - started), 1),
        "ingest_instances_per_second": round(len(arrived) / (sent - started), 1),
        "seconds_first_send_to_last_arrival": round(last - started, 2),
        "seconds_last_response_to_last_arrival": round(last - max(answered.values()), 2),
        "delay_response_to_arrival_s": _stats([arrived[uid] - answered[uid] for uid in arrived]),
    }


class Forwarding:
    """dicomflow (two rules), Orthanc (its Lua), a storescp for each; the runs."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.files = files_of(DATA / "dcm_qa_toshiba")
        self.ours = Storescp(workdir, "dicomflow")
        self.theirs = Storescp(workdir, "orthanc")
        overrides = stack_overrides(
            workdir / "dicomflow" / "var",
            ae_table={
                SENDER_AE: {"allowed_hosts": ["127.0.0.0/8"], "tenant": TENANT, "services": ["store"]},
                DEST_AE: {"host": "127.0.0.1", "port": self.ours.port, "services": []},
            },
            forward_rules=forward_rules(),
            stable_seconds=STABLE_SECONDS,
            scp_processes=SCP_PROCESSES,
        )
        self.dicomflow = RunningStack(overrides, workdir / "dicomflow.log")
        lua = workdir / "autorouting.lua"
        lua.write_text(ORTHANC_LUA)
        (workdir / "orthanc").mkdir(parents=True, exist_ok=True)
        self.orthanc = Orthanc(
            workdir / "orthanc",
            free_port(),
            free_port(),
            modalities={DEST_AE: (DEST_AE, "127.0.0.1", self.theirs.port)},
            lua_scripts=[lua],
        )
        self.runs: list[dict[str, Any]] = []
        self.counter = 0

    def start(self) -> None:
        self.ours.start()
        self.theirs.start()
        self.dicomflow.start()
        self.orthanc.start(fresh=True)

    def stop(self) -> None:
        for stop in (self.orthanc.stop, self.dicomflow.stop, self.ours.stop, self.theirs.stop):
            try:
                stop()
            except Exception as err:  # noqa: BLE001 - stop the rest
                print(f"  stopping: {err}", flush=True)

    def _prepare(self, pid: str) -> tuple[Path, str, list[Path]]:
        self.counter += 1
        folder = self.workdir / f"run-{self.counter}"
        study, paths = write_study(folder, self.files, pid)
        return folder, study, paths

    def run_dicomflow(self, mode: str) -> dict[str, Any]:
        folder, study, paths = self._prepare(patient_id(mode))
        s = self.dicomflow.settings
        started, sent, answered = dcmsend(folder, s.dimse.ae_title, s.dimse.port, paths)
        arrived = self.ours.wait_for(study, len(paths))
        result = measured(started, sent, answered, arrived)
        rule = RULES[mode]
        forward = names.forward_workflow_id(TENANT, rule, study)
        ids = [names.study_workflow_id(TENANT, study), forward]
        statuses = asyncio.run(wait_completed(s, ids, timeout=900))
        if any(v != WorkflowExecutionStatus.COMPLETED for v in statuses.values()):
            raise RuntimeError(f"workflows not completed: {statuses}")
        result["where_the_time_goes"] = self._breakdown(study, rule, started, answered, arrived)
        last_response = max(answered.values())
        spans: dict[str, Any] = {}
        for wid in ids:
            try:
                spans[wid] = asyncio.run(history_spans(s, wid, last_response))
            except Exception as err:  # noqa: BLE001 - an explanation, not a measurement: the run stands without it
                spans[wid] = f"history not read: {err!r}"
        result["where_the_time_goes"]["temporal_after_last_response"] = spans
        shutil.rmtree(folder)
        return {"system": f"dicomflow when={mode}", "study": study, **result}

    def _breakdown(
        self, study: str, rule: str, started: float, answered: dict[str, float], arrived: dict[str, float]
    ) -> dict[str, Any]:
        """From the index: receipt (row committed) -> listed in a forward round -> arrival."""
        with psycopg.connect(self.dicomflow.settings.effective_postgres_dsn(), autocommit=True) as conn:
            received: dict[str, float] = dict(
                conn.execute(
                    "SELECT sop_uid, extract(epoch FROM received_at)::float8 FROM instance WHERE tenant = %s AND study_uid = %s",
                    (TENANT, study),
                ).fetchall()
            )
            listed: dict[str, float] = dict(
                conn.execute(
                    """SELECT ri.sop_uid, extract(epoch FROM r.created_at)::float8 FROM retrieve_item ri
                       JOIN retrieve r ON r.id = ri.retrieve_id
                       WHERE r.tenant = %s AND r.requested_by = %s AND ri.sop_uid = ANY(%s)""",
                    (TENANT, f"forward:{rule}", list(arrived)),
                ).fetchall()
            )
            rounds = conn.execute(
                """SELECT extract(epoch FROM r.created_at)::float8, extract(epoch FROM r.finished_at)::float8, r.total
                   FROM retrieve r WHERE r.tenant = %s AND r.requested_by = %s
                     AND EXISTS (SELECT 1 FROM retrieve_item ri WHERE ri.retrieve_id = r.id AND ri.sop_uid = ANY(%s))
                   ORDER BY r.created_at""",
                (TENANT, f"forward:{rule}", list(arrived)),
            ).fetchall()
        return {
            # received_at is the receipt transaction's start: just before the response dcmsend logs
            "response_minus_index_received_at_s": _stats([answered[u] - received[u] for u in arrived]),
            "received_to_listed_in_a_round_s": _stats([listed[u] - received[u] for u in arrived]),
            "listed_to_arrival_s": _stats([arrived[u] - listed[u] for u in arrived]),
            "rounds": [
                {
                    "listed_at_s": round(created - started, 2),
                    "finished_at_s": round(finished - started, 2) if finished else None,
                    "instances": total,
                    "instances_per_second": round(total / (finished - created), 1) if finished and finished > created else None,
                }
                for created, finished, total in rounds
            ],
        }

    def run_orthanc(self) -> dict[str, Any]:
        folder, study, paths = self._prepare("FWD-ORTHANC")
        started, sent, answered = dcmsend(folder, "ORTHANC", self.orthanc.dicom_port, paths)
        arrived = self.theirs.wait_for(study, len(paths))
        result = measured(started, sent, answered, arrived)
        time.sleep(6)  # Orthanc keeps its association to the modality open 5 s (DicomAssociationCloseDelay)
        shutil.rmtree(folder)
        return {"system": "orthanc Lua OnStoredInstance", "study": study, **result}

    def rep(self, number: int) -> None:
        order: list[tuple[str, Any]] = [
            ("orthanc", self.run_orthanc),
            ("instance", lambda: self.run_dicomflow("instance")),
            ("study", lambda: self.run_dicomflow("study")),
        ]
        order = order[number % 3 :] + order[: number % 3]
        for _, run in order:
            load = round(os.getloadavg()[0], 2)  # what else ran: another stack on the machine shows here
            result = run()
            result["rep"] = number
            result["load_average_1min_before"] = load
            self.runs.append(result)
            delay = result["delay_response_to_arrival_s"]
            print(
                f"  rep {number} {result['system']:30s} {result['instances_per_second']:7.1f} inst/s "
                f"(ingest {result['ingest_instances_per_second']:.1f}/s), delay median {delay['median']:.3f} s "
                f"p95 {delay['p95']:.3f} s",
                flush=True,
            )


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    by_system: dict[str, list[dict[str, Any]]] = {}
    for run in runs:
        by_system.setdefault(run["system"], []).append(run)
    summary: dict[str, Any] = {}
    for system, items in by_system.items():
        summary[system] = {
            "runs": len(items),
            "instances_per_second_median": statistics.median(r["instances_per_second"] for r in items),
            "ingest_instances_per_second_median": statistics.median(r["ingest_instances_per_second"] for r in items),
            "delay_median_s": statistics.median(r["delay_response_to_arrival_s"]["median"] for r in items),
            "delay_p95_s": statistics.median(r["delay_response_to_arrival_s"]["p95"] for r in items),
        }
    theirs = summary.get("orthanc Lua OnStoredInstance")
    for system, (rate_bound, delay_bound) in TARGETS.items():
        if system not in summary or theirs is None:
            continue
        ours = summary[system]
        ratio = ours["instances_per_second_median"] / theirs["instances_per_second_median"]
        ours["ratio_instances_per_second"] = round(ratio, 2)
        ours["ratio_delay_median"] = round(ours["delay_median_s"] / theirs["delay_median_s"], 1)
        ours["target_instances_per_second"] = f">= {rate_bound:g}x Orthanc: {'met' if ratio >= rate_bound else 'missed'}"
        if delay_bound is not None:
            met = ours["delay_median_s"] < delay_bound
            ours["target_delay"] = f"median < {delay_bound:g} s: {'met' if met else 'missed'}"
    return summary


def table(summary: dict[str, Any]) -> str:
    rows = [
        "| system | instances/s (first send to last arrival) | ingest instances/s | receipt-to-arrival median / p95 s "
        "| instances/s dicomflow/Orthanc | targets |",
        "|---|---|---|---|---|---|",
    ]
    for system, s in summary.items():
        targets = "; ".join(v for k, v in s.items() if k.startswith("target_"))
        rows.append(
            f"| {system} | {s['instances_per_second_median']:.1f} | {s['ingest_instances_per_second_median']:.1f} | "
            f"{s['delay_median_s']:.3f} / {s['delay_p95_s']:.3f} | {s.get('ratio_instances_per_second', '')} | {targets} |"
        )
    return "\n".join(rows)


def main() -> int:
    os.environ["DICOMFLOW_ENV"] = "test"
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))  # so the servers are stopped
    load_start = [round(v, 2) for v in os.getloadavg()]
    started = time.monotonic()
    failed = ""
    with tempfile.TemporaryDirectory(prefix="dicomflow-bench-fwd-") as tmp:
        bench = Forwarding(Path(tmp))
        print(f"bench.forwarding: {len(bench.files)} Toshiba MR files, {REPS} repetitions", flush=True)
        try:
            bench.start()
            for number in range(REPS):
                bench.rep(number)
        except Exception as err:  # noqa: BLE001 - what ran is still written, the file marked partial
            import traceback

            traceback.print_exc()
            failed = str(err)
        finally:
            bench.stop()
    summary = summarize(bench.runs)
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d") + "-forwarding"
    if REPS != DEFAULT_REPS or failed:
        stamp += "-partial"
    document = {
        "date": stamp[:10],
        "machine": machine(),
        "code": code_version(),
        "orthanc": orthanc_version(),
        "note": NOTE,
        "description": (
            f"{len(bench.files)} real Toshiba MR instances (dcm_qa_toshiba, restamped as a new study per run) sent by "
            "dcmsend over one association; dicomflow forwards by rule (when = instance / study, stable_seconds "
            f"{STABLE_SECONDS:g}, scp_processes {SCP_PROCESSES}) to a storescp, Orthanc by Lua OnStoredInstance + "
            "SendToModality to another storescp. instances/s: from dcmsend's start to the last file storescp wrote; "
            "delay: from each instance's C-STORE response (dcmsend's log, ms) to its file's mtime at storescp."
        ),
        "reps": REPS,
        "minutes": round((time.monotonic() - started) / 60, 1),
        "load_average_start_end": [load_start, [round(v, 2) for v in os.getloadavg()]],
        "failed": failed,
        "summary": summary,
        "runs": bench.runs,
    }
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"{stamp}.json"
    out.write_text(json.dumps(document, indent=2))
    print(table(summary))
    print(f"bench.forwarding: wrote {out}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
