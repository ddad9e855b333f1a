"""Issue 30 item 6, the part that needs a running archive: does ingest keep its speed while a
lifecycle run works, and how fast do compression and tiering go inside the archive (GB/h)?

One dicomflow stack (scp_processes as the main bench) with two lifecycle rules: compress tenant
"old" to JPEG-LS lossless after 30 days, tier every tenant to a cold directory (cold_blob_dir,
another folder on the same disk here) after 365 days (so the tiering run also moves what the
compression phase received, and lasts long enough to send several batches against it). First OLD_COPIES restamped copies of the 520 real
Toshiba MR files are stored in "old". Then batches of the same files, restamped, are sent by
dcmsend over 4 associations into tenant "new", back to back:
  - without a lifecycle run (baseline),
  - while `dicomflow lifecycle run --as-of +40 days` compresses "old",
  - while `dicomflow lifecycle run --as-of +400 days` moves "old" to the cold tier,
  - without a lifecycle run again (the baseline's drift).
Only batches that ended before the lifecycle run did count as "during". Target: during >= 0.8x
baseline. Throughput: bytes the run reports over its wall time.

    .venv/bin/python -m bench.lifecycle_ingest     # bench/results/<date>-lifecycle-ingest.json
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.dimse_qr import code_version
from bench.forwarding import write_study
from bench.run import DATA, RESULTS, SCP_PROCESSES, machine
from bench.workloads import dcmsend_rate, files_of
from contract import names
from testkit.running_stack import DICOMFLOW, REPO, RunningStack, stack_overrides
from testkit.temporal_waits import wait_completed

OLD_COPIES = int(os.environ.get("BENCH_LIFECYCLE_OLD_COPIES", "6"))
ASSOCIATIONS = 4
BASELINE_BATCHES = 3
TARGET = 0.8
OLD_AE, NEW_AE = "OLD_MOD", "NEW_MOD"
_RESULT = re.compile(
    r"(\d+) object\(s\) compressed \((\d+) -> (\d+) bytes.*?(\d+) deleted, (\d+) moved to the cold store \((\d+) bytes\)"
)


class LifecycleIngest:
    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.files = files_of(DATA / "dcm_qa_toshiba")
        self.batches = 0
        overrides = stack_overrides(
            workdir / "var",
            ae_table={
                OLD_AE: {"allowed_hosts": ["127.0.0.0/8"], "tenant": "old", "services": ["store"]},
                NEW_AE: {"allowed_hosts": ["127.0.0.0/8"], "tenant": "new", "services": ["store"]},
            },
            lifecycle_rules=[
                {"name": "compress", "tenant": "old", "after_days": 30, "action": "compress", "syntax": "jpegls-lossless"},
                {"name": "tier", "after_days": 365, "action": "tier"},  # every tenant: a longer run to measure ingest against
            ],
            cold_blob_dir=str(workdir / "cold"),
            stable_seconds=1.0,
            scp_processes=SCP_PROCESSES,
        )
        self.stack = RunningStack(overrides, workdir / "dicomflow.log")

    def send(self, ae: str) -> tuple[str, float]:
        """One restamped copy of the 520 files over ASSOCIATIONS associations; (study, instances/s)."""
        self.batches += 1
        study, paths = write_study(self.workdir / f"batch-{self.batches}", self.files, f"LIFE{self.batches}")
        return study, dcmsend_rate(ae, self.stack.settings.dimse.port, paths, ASSOCIATIONS)

    def settle(self, tenant: str, studies: list[str]) -> None:
        time.sleep(self.stack.settings.ingest.stable_seconds + 2)
        ids = [names.study_workflow_id(tenant, s) for s in studies]
        asyncio.run(wait_completed(self.stack.settings, ids, timeout=900))

    def baseline(self) -> list[float]:
        sent = [self.send(NEW_AE) for _ in range(BASELINE_BATCHES)]
        self.settle("new", [s for s, _ in sent])
        return [rate for _, rate in sent]

    def during(self, days: int) -> dict[str, Any]:
        as_of = (dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=days)).isoformat()
        started = time.perf_counter()
        run = subprocess.Popen(
            [DICOMFLOW, "lifecycle", "run", "--as-of", as_of],
            env=self.stack.env,
            cwd=REPO,
            stdout=subprocess.PIPE,
            text=True,
        )
        rates, studies, late = [], [], 0
        while run.poll() is None:
            study, rate = self.send(NEW_AE)
            studies.append(study)
            if run.poll() is None:
                rates.append(rate)
            else:
                late += 1  # the run ended while this batch was on the wire
        out, _ = run.communicate()
        seconds = time.perf_counter() - started
        if run.returncode != 0:
            raise RuntimeError(f"lifecycle run failed: {out[-800:]}")
        self.settle("new", studies)
        return {"rates": rates, "batches_not_counted": late, "run_seconds": round(seconds, 1), **parsed(out, seconds)}


def parsed(out: str, seconds: float) -> dict[str, Any]:
    found = _RESULT.search(out)
    if found is None:
        raise RuntimeError(f"no result line in: {out[-800:]}")
    compressed, before, after, _, moved, moved_bytes = map(int, found.groups())
    worked = before if compressed else moved_bytes
    return {
        "objects_compressed": compressed,
        "objects_moved": moved,
        "mb": round(worked / 2**20, 1),
        "ratio": round(before / after, 2) if after else None,
        "gb_per_hour": round(worked / 2**30 / seconds * 3600, 1),
    }


def summary(baseline: list[float], phases: dict[str, dict[str, Any]], drift: list[float]) -> dict[str, Any]:
    base = statistics.median(baseline + drift)
    out: dict[str, Any] = {"baseline_instances_per_s": round(base, 1)}
    for name, phase in phases.items():
        during = statistics.median(phase["rates"]) if phase["rates"] else None
        ratio = round(during / base, 2) if during else None
        out[name] = {
            "during_instances_per_s": round(during, 1) if during else None,
            "ratio": ratio,
            "target": TARGET,
            "met": ratio is not None and ratio >= TARGET,
            "gb_per_hour": phase["gb_per_hour"],
        }
    return out


def main() -> int:
    os.environ["DICOMFLOW_ENV"] = "test"
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    started = time.monotonic()
    load_start = [round(v, 2) for v in os.getloadavg()]
    with tempfile.TemporaryDirectory(prefix="dicomflow-bench-life-") as tmp:
        bench = LifecycleIngest(Path(tmp))
        print(
            f"bench.lifecycle_ingest: {OLD_COPIES} x {len(bench.files)} Toshiba MR files to age, batches of the same", flush=True
        )
        bench.stack.start()
        try:
            bench.settle("old", [bench.send(OLD_AE)[0] for _ in range(OLD_COPIES)])
            baseline = bench.baseline()
            print(f"  baseline: {[round(r, 1) for r in baseline]} instances/s", flush=True)
            phases = {"compress": bench.during(40)}
            print(f"  during compression: {phases['compress']}", flush=True)
            phases["tier"] = bench.during(400)
            print(f"  during tiering: {phases['tier']}", flush=True)
            drift = bench.baseline()
            print(f"  baseline again: {[round(r, 1) for r in drift]} instances/s", flush=True)
        finally:
            bench.stack.stop()
    document = {
        "date": dt.date.today().isoformat(),
        "machine": machine(),
        "code": code_version(),
        "description": __doc__.split("\n\n")[1],
        "minutes": round((time.monotonic() - started) / 60, 1),
        "load_average_start_end": [load_start, [round(v, 2) for v in os.getloadavg()]],
        "baseline_rates": baseline + drift,
        "phases": phases,
        "summary": summary(baseline, phases, drift),
    }
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"{document['date']}-lifecycle-ingest.json"
    out.write_text(json.dumps(document, indent=2))
    print(json.dumps(document["summary"], indent=2))
    print(f"bench.lifecycle_ingest: wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
