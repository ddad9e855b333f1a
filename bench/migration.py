"""Migration from a legacy archive, dicomflow side by side with Orthanc (issue 33 item 5).

The source is dcmtk's `dcmqrscp`, its database filled by `dcmqridx` with real MR files (the 520
Toshiba and 423 GE files of the shared data, restamped into STUDIES studies over DAYS days). Each
system pulls every study over DIMSE Q/R the way a migration tool does, with two C-MOVEs at once:

- dicomflow: `dicomflow migrate --from LEGACY --since ... --until ...` (C-FIND day by day, C-MOVE
  per study to its own AE title, each study verified against the source's count: dcmqrscp gives no
  NumberOfStudyRelatedInstances, so dicomflow asks for the study's series and images too);
- Orthanc: its REST API driven like a migration script: `/modalities/LEGACY/query` per day, then
  `/modalities/LEGACY/move` per study (two threads), then its own instance count per study.

Rates: studies/s and instances/s from the start to the last study verified (the command's end for
dicomflow: every instance acknowledged durable and indexed); for dicomflow also until every study
workflow has processed its study (the archive's own steps after receipt).

    .venv/bin/python -m bench.migration        # bench/results/<date>-migration.json
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import signal
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import psycopg
import requests
from temporalio.client import WorkflowExecutionStatus

from bench.dimse_qr import code_version, orthanc_version
from bench.orthanc import Orthanc
from bench.run import DATA, RESULTS, SCP_PROCESSES, machine
from bench.workloads import files_of
from contract import names
from testkit.legacy_pacs import legacy_pacs
from testkit.restamp import as_new_study
from testkit.running_stack import RunningStack, free_port, stack_overrides
from testkit.temporal_waits import wait_completed

SOURCE_AE = "LEGACY"
TENANT = "legacy"
STUDIES = int(os.environ.get("BENCH_MIGRATION_STUDIES", "40"))
DAYS = 10
FIRST_DAY = dt.date(2019, 3, 1)
CONCURRENCY = 2  # C-MOVEs at once, both systems
ORTHANC_AE = "ORTHANC"


def write_source(folder: Path) -> tuple[list[Path], dict[str, int]]:
    """The source's files, restamped into STUDIES studies over DAYS days; {study: instances}."""
    files = files_of(DATA / "dcm_qa_toshiba") + files_of(DATA / "dcm_qa_ge")
    per_study = len(files) // STUDIES
    written: list[Path] = []
    counts: dict[str, int] = {}
    for n in range(STUDIES):
        day = (FIRST_DAY + dt.timedelta(days=n % DAYS)).strftime("%Y%m%d")
        chunk = files[n * per_study : (n + 1) * per_study]
        target = folder / f"study{n:03d}"
        target.mkdir(parents=True)
        for i, payload in enumerate(as_new_study(chunk, StudyDate=day, PatientID=f"MIG{n:03d}")):
            path = target / f"{i:04d}.dcm"
            path.write_bytes(payload)
            written.append(path)
        counts[f"study{n:03d}"] = len(chunk)
    return written, counts


def days() -> list[str]:
    return [(FIRST_DAY + dt.timedelta(days=n)).strftime("%Y%m%d") for n in range(DAYS)]


def run_dicomflow(stack: RunningStack, instances: int) -> dict[str, Any]:
    since, until = days()[0], days()[-1]
    started = time.monotonic()
    done = stack.cli(
        "migrate", "--from", SOURCE_AE, "--since", since, "--until", until, "--concurrency", str(CONCURRENCY), timeout=7200
    )
    verified = time.monotonic() - started
    if done.returncode != 0:
        raise RuntimeError(f"dicomflow migrate failed: {done.stdout[-2000:]} {done.stderr[-2000:]}")
    with psycopg.connect(stack.settings.effective_postgres_dsn()) as conn:
        held = conn.execute("SELECT count(*), count(DISTINCT study_uid) FROM instance WHERE tenant = %s", (TENANT,)).fetchone()
        studies = [r[0] for r in conn.execute("SELECT study_uid FROM study WHERE tenant = %s", (TENANT,)).fetchall()]
    ids = [names.study_workflow_id(TENANT, s) for s in studies]
    statuses = asyncio.run(wait_completed(stack.settings, ids, timeout=1800))
    processed = time.monotonic() - started
    assert held is not None
    return {
        "studies": held[1],
        "instances": held[0],
        "seconds_to_verified": round(verified, 2),
        "seconds_to_processed": round(processed, 2),
        "studies_per_second": round(held[1] / verified, 3),
        "instances_per_second": round(held[0] / verified, 1),
        "processed_instances_per_second": round(held[0] / processed, 1),
        "all_study_workflows_completed": all(v == WorkflowExecutionStatus.COMPLETED for v in statuses.values()),
        "complete": held[0] == instances,
        "last_lines": done.stdout.splitlines()[-2:],
    }


def _orthanc_day(orthanc: Orthanc, day: str) -> list[str]:
    query = requests.post(
        f"{orthanc.url}/modalities/{SOURCE_AE}/query",
        json={"Level": "Study", "Query": {"StudyDate": day, "StudyInstanceUID": ""}},
        timeout=300,
    ).json()
    answers = requests.get(f"{orthanc.url}/queries/{query['ID']}/answers", timeout=60).json()
    uids = []
    for index in answers:
        content = requests.get(f"{orthanc.url}/queries/{query['ID']}/answers/{index}/content?simplify", timeout=60).json()
        uids.append(content["StudyInstanceUID"])
    return uids


def _orthanc_move(orthanc: Orthanc, study_uid: str) -> int:
    """The study moved (synchronously) and the instances Orthanc then holds of it."""
    answer = requests.post(
        f"{orthanc.url}/modalities/{SOURCE_AE}/move",
        json={"Level": "Study", "Resources": [{"StudyInstanceUID": study_uid}], "TargetAet": ORTHANC_AE, "Timeout": 600},
        timeout=900,
    )
    answer.raise_for_status()
    found = requests.post(f"{orthanc.url}/tools/lookup", data=study_uid, timeout=60).json()
    study = next(f["ID"] for f in found if f["Type"] == "Study")
    return int(requests.get(f"{orthanc.url}/studies/{study}/statistics", timeout=60).json()["CountInstances"])


def run_orthanc(orthanc: Orthanc, instances: int) -> dict[str, Any]:
    started = time.monotonic()
    studies = [uid for day in reversed(days()) for uid in _orthanc_day(orthanc, day)]
    with ThreadPoolExecutor(CONCURRENCY) as pool:
        held = list(pool.map(lambda uid: _orthanc_move(orthanc, uid), studies))
    verified = time.monotonic() - started
    return {
        "studies": len(studies),
        "instances": sum(held),
        "seconds_to_verified": round(verified, 2),
        "studies_per_second": round(len(studies) / verified, 3),
        "instances_per_second": round(sum(held) / verified, 1),
        "complete": sum(held) == instances,
    }


def side_by_side(work: Path) -> dict[str, Any]:
    """Both migrations from one dcmqrscp source under `work`: {"dicomflow": ..., "orthanc": ...}; what ran is
    returned even when the other failed (its error under "failed")."""
    results: dict[str, Any] = {}
    files, counts = write_source(work / "source")
    instances = len(files)
    source_port = free_port()
    overrides = stack_overrides(
        work / "dicomflow" / "var",
        ae_table={
            SOURCE_AE: {"host": "127.0.0.1", "port": source_port, "tenant": TENANT, "services": ["store"]},
        },
        scp_processes=SCP_PROCESSES,
    )
    stack = RunningStack(overrides, work / "dicomflow.log")
    (work / "orthanc").mkdir(parents=True)
    orthanc = Orthanc(work / "orthanc", free_port(), free_port(), modalities={SOURCE_AE: (SOURCE_AE, "127.0.0.1", source_port)})
    destinations = {
        stack.settings.dimse.ae_title: ("127.0.0.1", stack.settings.dimse.port),
        ORTHANC_AE: ("127.0.0.1", orthanc.dicom_port),
    }
    print(f"bench.migration: {len(counts)} studies, {instances} instances over {DAYS} days", flush=True)
    try:
        with legacy_pacs(work / "pacs", source_port, {SOURCE_AE: files}, destinations):
            stack.start()
            try:
                results["dicomflow"] = run_dicomflow(stack, instances)
                print(f"  dicomflow: {results['dicomflow']}", flush=True)
            finally:
                stack.stop()
            orthanc.start(fresh=True)
            try:
                results["orthanc"] = run_orthanc(orthanc, instances)
                print(f"  orthanc: {results['orthanc']}", flush=True)
            finally:
                orthanc.stop()
    except Exception as err:  # noqa: BLE001 - what ran is still written, the file marked partial
        import traceback

        traceback.print_exc()
        results["failed"] = str(err)
    return results


def main() -> int:
    os.environ["DICOMFLOW_ENV"] = "test"
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    load_start = [round(v, 2) for v in os.getloadavg()]
    with tempfile.TemporaryDirectory(prefix="dicomflow-bench-migration-") as tmp:
        results = side_by_side(Path(tmp))
    failed = results.pop("failed", "")
    instances = results.get("dicomflow", results.get("orthanc", {})).get("instances", 0)
    if "dicomflow" in results and "orthanc" in results:
        for rate in ("studies_per_second", "instances_per_second"):
            results[f"ratio_{rate}"] = round(results["dicomflow"][rate] / results["orthanc"][rate], 3)
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d") + "-migration" + ("-partial" if failed else "")
    document = {
        "date": stamp[:10],
        "machine": machine(),
        "code": code_version(),
        "orthanc": orthanc_version(),
        "description": (
            f"{STUDIES} studies / {instances} real MR instances (dcm_qa_toshiba + dcm_qa_ge restamped) in dcmtk's "
            f"dcmqrscp over {DAYS} study dates, pulled by C-FIND per day and C-MOVE per study, {CONCURRENCY} moves at "
            "once: `dicomflow migrate` (each study verified against the source's series/image counts) and Orthanc's "
            "REST /modalities/LEGACY/query + /move (synchronous, then its own instance count per study)"
        ),
        "scp_processes": SCP_PROCESSES,
        "load_average_start_end": [load_start, [round(v, 2) for v in os.getloadavg()]],
        "failed": failed,
        "results": results,
    }
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"{stamp}.json"
    out.write_text(json.dumps(document, indent=2))
    print(json.dumps(results, indent=2))
    print(f"bench.migration: wrote {out}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
