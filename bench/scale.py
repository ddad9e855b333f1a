"""The workloads that grow the archives: QIDO after 2,000 and 20,000 synthetic studies (both systems),
QIDO percentiles at 1k/10k/100k bulk-loaded studies and C-STORE with 1/2/4 SCP processes (dicomflow)."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import TYPE_CHECKING

import psycopg

from bench.index_loader import bulk_load
from bench.qido_scale import measure
from bench.synthetic import write_synthetic
from bench.workloads import Target, dcmsend_rate, files_of

if TYPE_CHECKING:
    from bench.run import Bench

SYNTHETIC_SOURCE = Path("dcm_qa_ge/In/SliceTiming/2_Ax_fMRI_HB8_72sl_int_asc/0032.dcm")  # 27 KB MR


def _steps(variable: str, default: str) -> tuple[int, ...]:
    """Sizes, overridable for a quick trial run (e.g. BENCH_SYNTHETIC_STEPS=200,500)."""
    return tuple(int(v) for v in os.environ.get(variable, default).split(","))


SYNTHETIC_STEPS = _steps("BENCH_SYNTHETIC_STEPS", "2000,20000")
INDEX_STEPS = _steps("BENCH_INDEX_STEPS", "1000,10000,100000")


def wait_ready(dsn: str, tenant: str, expected: int, timeout: float = 7200) -> float:
    """Seconds until `expected` studies of `tenant` are ready (their workflows done), with progress."""
    started = time.monotonic()
    polls = 0
    with psycopg.connect(dsn, autocommit=True) as conn:
        while True:
            ready, total = conn.execute(
                "SELECT count(*) FILTER (WHERE state = 'ready'), count(*) FROM study WHERE tenant = %s", (tenant,)
            ).fetchone()
            if ready >= expected:
                return time.monotonic() - started
            if time.monotonic() - started > timeout:
                raise RuntimeError(f"only {ready}/{expected} studies of {tenant} ready after {timeout} s")
            if polls % 5 == 0:  # polled every 2 s for the timing, reported every 10 s
                print(f"  waiting for workflows: {ready}/{expected} studies ready ({total} indexed)", flush=True)
            polls += 1
            time.sleep(2)


def synthetic_reads(bench: Bench, targets: dict[str, Target], files: list[Path], data: Path) -> None:
    """Grow both systems to 2k and then 20k extra studies; repeat the QIDO cases at each size."""
    dsn = bench.dicomflow.settings.effective_postgres_dsn()
    tenant = targets["dicomflow"].headers["x-tenant"]
    already = _study_count(dsn, tenant)
    loaded = 0
    for step in SYNTHETIC_STEPS:
        batch = list(write_synthetic(data / SYNTHETIC_SOURCE, loaded, step - loaded, bench.workdir / "synthetic"))
        sent_at = 0.0
        for system, target in targets.items():
            rate = dcmsend_rate(target.ae, target.dimse_port, batch, 4)
            sent_at = time.monotonic() if system == "dicomflow" else sent_at
            bench.record(f"synthetic load to +{step:,} studies, 4 assoc, instances/s", system, rate)
        wait_ready(dsn, tenant, already + step)
        # from dicomflow's own last send, not Orthanc's (which ran after it, on the same cores)
        seconds = time.monotonic() - sent_at
        bench.record(f"synthetic load to +{step:,} studies: all workflows done, s after last send", "dicomflow", seconds)
        loaded = step
        bench.reads(targets, files, f"at +{step:,} studies: ", qido_only=True)
        for path in batch:
            path.unlink()


def _study_count(dsn: str, tenant: str) -> int:
    with psycopg.connect(dsn) as conn:
        return conn.execute("SELECT count(*) FROM study WHERE tenant = %s", (tenant,)).fetchone()[0]


def qido_percentiles(bench: Bench) -> None:
    s = bench.dicomflow.settings
    url = f"http://127.0.0.1:{s.web.http_port}/dicomweb/studies"
    loaded = 0
    for step in INDEX_STEPS:
        bulk_load(s.effective_postgres_dsn(), "scale", loaded, step - loaded)
        loaded = step
        result = measure(url, "scale", loaded)
        for key, value in result.items():
            if key != "n":
                bench.record(f"QIDO at {step:,} bulk-loaded studies: {key} ms", "dicomflow", value)


def scp_curve(bench: Bench, data: Path, processes: tuple[int, ...] = (1, 2, 4)) -> None:
    """C-STORE over 4 associations into stacks with 1, 2 and 4 SCP processes sharing the port."""
    files = files_of(data)
    for count in processes:
        stack = bench.extra_stack(f"scp{count}", scp_processes=count)
        try:
            for _ in range(bench.reps):
                ae, _tenant = bench.fresh_tenant()
                bench.record(
                    f"C-STORE instances/s, 4 assoc, {count} SCP process(es)",
                    "dicomflow",
                    dcmsend_rate(ae, stack.settings.dimse.port, files, 4),
                )
        finally:
            stack.stop()
