"""Where a read's time goes, dicomflow beside Orthanc (issue 33: the profile behind read-side ratios).

    .venv/bin/python -m bench.read_profile      # bench/results/<date>-read-profile.json

Both systems loaded as `make bench` loads them for its reads (bench/run.py's load_for_reads). For
each read workload, REQUESTS requests one after another to each system: the median wall time, and
the CPU per request of every process kind (bench/cpu_split.py; Orthanc is one process). For
dicomflow, py-spy samples the Serve replica over the same requests; its busiest frames of our code
and of the HTTP stack are listed, so that a ratio is read from where the milliseconds go.
"""

from __future__ import annotations

import collections
import datetime as dt
import json
import os
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil

from bench.cpu_split import CpuSplit
from bench.profile_ingest import IDLE_LEAVES, profile_targets, read_raw, start_py_spy, stop_py_spy
from bench.run import DATA, RESULTS, Bench, machine
from bench.workloads import Target, files_of, qido_cases, timed_get

REQUESTS = int(os.environ.get("BENCH_READ_PROFILE_REQUESTS", "100"))
WANTED = (
    "QIDO studies limit=25",
    "QIDO PatientID",
    "QIDO series of a study",
    "frames/1 CT 512x512 JPEG 2000",
    "rendered JPEG CT 512x512",
)


def _cpu_per_request(target: Target, pid: int, path: str, params: dict, accept: str) -> tuple[float, dict[str, float]]:
    split = CpuSplit({target.name: psutil.Process(pid)})
    split.start()
    times = [timed_get(target, path, params, accept) for _ in range(REQUESTS)]
    return 1000 * statistics.median(times), {k: round(1000 * v / REQUESTS, 3) for k, v in split.stop().items() if v > 0}


def _frames(raw: Path, top: int = 12) -> list[tuple[str, float]]:
    """The replica's busiest frames (inclusive share of its non-idle samples), ours and the HTTP stack's."""
    stacks = read_raw(raw)
    busy = {s: n for s, n in stacks.items() if s and not IDLE_LEAVES.match(s.rsplit(";", 1)[-1])}
    total = sum(busy.values()) or 1
    inclusive: collections.Counter = collections.Counter()
    for stack, n in busy.items():
        for frame in set(stack.split(";")):
            if re.search(r"\((serve|archive|starlette|fastapi|uvicorn|ray/serve|psycopg|pydicom|PIL)", frame):
                inclusive[frame] += n
    return [(frame, round(n / total, 3)) for frame, n in inclusive.most_common(top)]


def main() -> int:
    os.environ["DICOMFLOW_ENV"] = "test"
    out: dict[str, Any] = {"machine": machine(), "requests": REQUESTS, "workloads": {}}
    with tempfile.TemporaryDirectory(prefix="dicomflow-read-profile-") as tmp:
        bench = Bench(Path(tmp))
        bench.dicomflow.start()
        try:
            targets, files = bench.load_for_reads(files_of(DATA))
            cases = [c for c in qido_cases(files) if c[0] in WANTED]
            replica = {k: v for k, v in profile_targets(bench.dicomflow).items() if k.startswith("serve")}
            pids = {"dicomflow": bench.dicomflow.process.pid, "orthanc": bench.orthanc.process.pid}  # type: ignore[union-attr]
            for name, path, params, accept in cases:
                for target in targets.values():
                    timed_get(target, path, params, accept)  # warm
                entry: dict[str, Any] = {}
                for system, target in targets.items():
                    spies = (
                        start_py_spy(replica, Path(tmp) / "spy" / re.sub(r"\W+", "_", name), 200) if system == "dicomflow" else []
                    )
                    time.sleep(0.5 if spies else 0)
                    median_ms, cpu = _cpu_per_request(target, pids[system], path, params, accept)
                    stop_py_spy(spies)
                    entry[system] = {
                        "median_ms": round(median_ms, 2),
                        "cpu_ms_per_request": cpu,
                        "cpu_ms_total": round(sum(cpu.values()), 2),
                    }
                raws = list((Path(tmp) / "spy" / re.sub(r"\W+", "_", name)).glob("*.txt"))
                entry["dicomflow"]["replica_frames"] = _frames(raws[0]) if raws else []
                out["workloads"][name] = entry
                print(
                    name,
                    json.dumps({s: {k: v for k, v in e.items() if k != "replica_frames"} for s, e in entry.items()}),
                    flush=True,
                )
        finally:
            bench.orthanc.stop()
            bench.dicomflow.stop()
    path = RESULTS / f"{dt.datetime.now(dt.timezone.utc):%Y-%m-%d}-read-profile.json"
    path.write_text(json.dumps(out, indent=2))
    print(f"bench.read_profile: wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
