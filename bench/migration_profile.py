"""Where a study's migration time goes (issue 33: the profile behind the migration rate's ratio).

    .venv/bin/python -m bench.migration_profile      # bench/results/<date>-migration-profile.json

The same source and command as bench/migration.py (dcmqrscp, `dicomflow migrate`, two moves at
once), once, with two things measured: CPU seconds per process kind over the migration (the
ingest bench's CpuSplit), and from the migration's day workflows' Temporal histories, each activity
type's count, its wait on the task queue (scheduled -> started) and its run (started -> completed),
so that the wall time of a study is split between the source's C-FIND/C-MOVE, the archive's
receipt and the workflow machinery around them.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil
from temporalio.api.enums.v1 import EventType

from bench.cpu_split import CpuSplit
from bench.migration import CONCURRENCY, DAYS, SOURCE_AE, TENANT, days, write_source
from bench.run import RESULTS, SCP_PROCESSES, machine
from contract import names
from testkit.legacy_pacs import legacy_pacs
from testkit.running_stack import RunningStack, free_port, stack_overrides
from testkit.temporal_waits import client_for


async def activity_timings(stack: RunningStack) -> dict[str, dict[str, float]]:
    """Per activity type over the migration's workflows: count, median and total seconds waiting and running."""
    client = await client_for(stack.settings)
    query = f"WorkflowType = '{names.MIGRATION_DAY_WORKFLOW}' OR WorkflowType = '{names.MIGRATION_WORKFLOW}'"
    waits: dict[str, list[float]] = {}
    runs: dict[str, list[float]] = {}
    async for execution in client.list_workflows(query):
        history = await client.get_workflow_handle(execution.id, run_id=execution.run_id).fetch_history()
        scheduled: dict[int, tuple[str, float]] = {}
        started: dict[int, float] = {}
        for e in history.events:
            at = e.event_time.ToDatetime().timestamp()
            if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
                scheduled[e.event_id] = (e.activity_task_scheduled_event_attributes.activity_type.name, at)
            elif e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED:
                kind, when = scheduled[e.activity_task_started_event_attributes.scheduled_event_id]
                waits.setdefault(kind, []).append(at - when)
                started[e.activity_task_started_event_attributes.scheduled_event_id] = at
            elif e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED:
                event_id = e.activity_task_completed_event_attributes.scheduled_event_id
                runs.setdefault(scheduled[event_id][0], []).append(at - started[event_id])
    return {
        kind: {
            "count": len(runs.get(kind, [])),
            "wait_median_s": round(statistics.median(waits[kind]), 4),
            "run_median_s": round(statistics.median(runs.get(kind, [0.0])), 4),
            "run_total_s": round(sum(runs.get(kind, [])), 2),
        }
        for kind in waits
    }


def main() -> int:
    os.environ["DICOMFLOW_ENV"] = "test"
    with tempfile.TemporaryDirectory(prefix="dicomflow-migration-profile-") as tmp:
        work = Path(tmp)
        files, counts = write_source(work / "source")
        source_port = free_port()
        overrides = stack_overrides(
            work / "dicomflow" / "var",
            ae_table={SOURCE_AE: {"host": "127.0.0.1", "port": source_port, "tenant": TENANT, "services": ["store"]}},
            scp_processes=SCP_PROCESSES,
        )
        stack = RunningStack(overrides, work / "dicomflow.log")
        destinations = {stack.settings.dimse.ae_title: ("127.0.0.1", stack.settings.dimse.port)}
        with legacy_pacs(work / "pacs", source_port, {SOURCE_AE: files}, destinations):
            stack.start()
            try:
                assert stack.process is not None
                cpu = CpuSplit({"dicomflow": psutil.Process(stack.process.pid)})
                cpu.start()
                began = time.monotonic()
                done = stack.cli(
                    "migrate", "--from", SOURCE_AE, "--since", days()[0], "--until", days()[-1],
                    "--concurrency", str(CONCURRENCY), timeout=3600,
                )  # fmt: skip
                seconds = time.monotonic() - began
                split = cpu.stop()
                if done.returncode != 0:
                    raise RuntimeError(done.stdout[-2000:] + done.stderr[-2000:])
                timings = asyncio.run(activity_timings(stack))
            finally:
                stack.stop()
    result: dict[str, Any] = {
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d"),
        "machine": machine(),
        "studies": len(counts),
        "instances": len(files),
        "days": DAYS,
        "concurrency": CONCURRENCY,
        "seconds_to_verified": round(seconds, 2),
        "cpu_ms_per_instance": {k: round(1000 * v / len(files), 2) for k, v in split.items() if v > 0.01},
        "cpu_ms_per_instance_total": round(1000 * sum(split.values()) / len(files), 2),
        "activities": timings,
        "last_line": done.stdout.splitlines()[-1],
    }
    out = RESULTS / f"{result['date']}-migration-profile.json"
    out.write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
