"""CPU per acknowledged instance, receipt to study ready, over every process of each system (issue 33
item 2's first target): dicomflow's whole process tree (the SCP, Serve, workflow worker, Temporal,
PostgreSQL, Redis, Ray's own daemons) from the first byte sent until each study of the tenant is
`ready`; Orthanc's one process, which stores and indexes before it answers, over its send."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import psutil
import psycopg

from bench.cpu_split import CpuSplit


def wait_ready(dsn: str, tenant: str, expected: int | None = None, timeout: float = 1800) -> tuple[float, int]:
    """(seconds, studies held) once `expected` studies of the tenant are `ready` (every study it holds,
    when None): their workflows have done every step after receipt. Polled every 0.25 s, so that the
    CPU counted after the last study is ready stays small."""
    started = time.monotonic()
    with psycopg.connect(dsn, autocommit=True) as conn:
        while True:
            ready, total = conn.execute(
                "SELECT count(*) FILTER (WHERE state = 'ready'), count(*) FROM study WHERE tenant = %s", (tenant,)
            ).fetchone()
            if total and ready >= (total if expected is None else expected):
                return time.monotonic() - started, total
            if time.monotonic() - started > timeout:
                raise RuntimeError(f"{tenant}: only {ready}/{expected or total} studies ready after {timeout} s")
            time.sleep(0.25)


def dicomflow_cpu(root_pid: int, dsn: str, tenant: str, send: Callable[[], float]) -> tuple[float, dict[str, float]]:
    """(send's result, CPU seconds per process label) from the send's start until the tenant is ready."""
    split = CpuSplit({"dicomflow": psutil.Process(root_pid)})
    split.start()
    result = send()
    wait_ready(dsn, tenant)
    return result, split.stop()


def orthanc_cpu(pid: int, send: Callable[[], float], settle: float = 2.0) -> tuple[float, float]:
    """(send's result, Orthanc's CPU seconds over the send and a short settle for its jobs)."""
    proc = psutil.Process(pid)
    before = proc.cpu_times()
    result = send()
    time.sleep(settle)
    after = proc.cpu_times()
    return result, (after.user + after.system) - (before.user + before.system)


def ms_per_instance(seconds: float, files: list[Path]) -> float:
    return 1000 * seconds / len(files)
