"""`make bench`: dicomflow side by side with Orthanc (and dcmtk's storescp as the bare ceiling), on
../shared/data, in one run, alternating systems over repetitions, reported as ratios."""

from __future__ import annotations

import datetime as dt
import functools
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path

import requests
from pydicom import dcmread

from bench.ingest_cpu import dicomflow_cpu, ms_per_instance, orthanc_cpu
from bench.mixed_load import mixed_load
from bench.orthanc import Orthanc
from bench.scale import INDEX_STEPS, SYNTHETIC_STEPS, qido_percentiles, scp_curve, synthetic_reads
from bench.workloads import Target, dcmsend_rate, files_of, qido_cases, restamped, stow_rate, timed_get
from testkit.running_stack import RunningStack, stack_overrides
from testkit.temporal_waits import wait_completed

REPS = int(os.environ.get("BENCH_REPS", "3"))
# requests per latency workload, system and repetition: with 5 the medians of two ~2 ms answers
# moved by 30 % from run to run
SAMPLES = int(os.environ.get("BENCH_SAMPLES", "20"))
# ...but a case stops after CASE_SECONDS once it has MIN_SAMPLES, both systems the same count
CASE_SECONDS = float(os.environ.get("BENCH_CASE_SECONDS", "90"))
MIN_SAMPLES = 3
RETRIEVE_SAMPLES = 10  # study retrieves per system and repetition: one was too few for a stable median
SCP_PROCESSES = int(os.environ.get("BENCH_SCP_PROCESSES", "2"))  # the main stack's; the curve tries 1, 2, 4
DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
if not DATA.exists():
    DATA = Path("/work/shared/data")
RESULTS = Path(__file__).resolve().parent / "results"


def machine() -> str:
    return f"{platform.node()}: {os.cpu_count()} cores, {os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.0f} GiB, Linux {platform.release()}"


class Bench:
    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        tenants = {f"BENCH{i}": {"host": "127.0.0.1", "port": 1, "tenant": f"bench{i}"} for i in range(40)}
        self.tenants = tenants
        overrides = stack_overrides(
            workdir / "dicomflow" / "var", ae_table=tenants, stable_seconds=1.0, scp_processes=SCP_PROCESSES
        )
        overrides.update(http_port=18000, dimse_port=11113)
        self.dicomflow = RunningStack(overrides, workdir / "dicomflow.log")
        self.reps = REPS
        self.orthanc = Orthanc(workdir / "orthanc", 18042, 14242)
        self.samples: dict[str, dict[str, list[float]]] = {}
        self.tenant_counter = 0

    def extra_stack(self, name: str, **settings: object) -> RunningStack:
        """Another dicomflow on free ports (the main one stopped), started."""
        overrides = stack_overrides(self.workdir / name / "var", ae_table=self.tenants, stable_seconds=1.0, **settings)
        stack = RunningStack(overrides, self.workdir / f"{name}.log")
        stack.start()
        return stack

    def record(self, workload: str, system: str, value: float) -> None:
        self.samples.setdefault(workload, {}).setdefault(system, []).append(value)
        print(f"  {workload:45s} {system:10s} {value:10.3f}", flush=True)

    def fresh_tenant(self) -> tuple[str, str]:
        self.tenant_counter += 1
        return f"BENCH{self.tenant_counter}", f"bench{self.tenant_counter}"

    def targets(self, ae: str, tenant: str) -> dict[str, Target]:
        s = self.dicomflow.settings
        return {
            "dicomflow": Target(
                "dicomflow", f"http://127.0.0.1:{s.web.http_port}/dicomweb", ae, s.dimse.port, {"x-tenant": tenant}
            ),
            "orthanc": Target("orthanc", self.orthanc.dicomweb, "ORTHANC", self.orthanc.dicom_port, {}),
        }

    # ingest --------------------------------------------------------------------------------------

    def ingest(self, files: list[Path]) -> None:
        for rep in range(REPS):
            order = ["dicomflow", "orthanc", "storescp"] if rep % 2 == 0 else ["storescp", "orthanc", "dicomflow"]
            for associations in (1, 4):
                for system in order:
                    self.record(
                        f"C-STORE instances/s, {associations} assoc", system, self._one_ingest(system, files, associations)
                    )
            for threads in (1, 4):
                for system in order[:2] if rep % 2 == 0 else order[1:]:
                    if system == "storescp":
                        continue
                    ae, tenant = self.fresh_tenant()
                    if system == "orthanc":
                        self.orthanc.stop()
                        self.orthanc.start(fresh=True)
                    target = self.targets(ae, tenant)[system]
                    rate = self._with_cpu(
                        f"STOW-RS {threads} thread(s)",
                        system,
                        tenant,
                        files,
                        functools.partial(stow_rate, target, files, threads),
                    )
                    self.record(f"STOW-RS instances/s, {threads} thread(s)", system, rate)

    def _one_ingest(self, system: str, files: list[Path], associations: int) -> float:
        if system == "storescp":
            out = Path(tempfile.mkdtemp(dir=self.workdir))
            server = subprocess.Popen(
                ["storescp", "-od", str(out), "-aet", "STORESCP", "14343"],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                env={**os.environ, "TCP_NODELAY": "1"},
            )
            time.sleep(0.5)
            try:
                return dcmsend_rate("STORESCP", 14343, files, associations)
            finally:
                server.terminate()
                server.wait(10)
                subprocess.run(["rm", "-rf", str(out)])
        workload = f"C-STORE {associations} assoc"
        if system == "orthanc":
            self.orthanc.stop()
            self.orthanc.start(fresh=True)
            return self._with_cpu(
                workload, system, "", files, lambda: dcmsend_rate("ORTHANC", self.orthanc.dicom_port, files, associations)
            )
        ae, tenant = self.fresh_tenant()
        port = self.dicomflow.settings.dimse.port
        return self._with_cpu(workload, system, tenant, files, lambda: dcmsend_rate(ae, port, files, associations))

    def _with_cpu(self, workload: str, system: str, tenant: str, files: list[Path], send: Callable[[], float]) -> float:
        """send()'s rate; records CPU ms per instance over all of the system's processes (bench/ingest_cpu.py),
        and for dicomflow each process kind's share, which is the profile a miss is read from."""
        label = f"CPU ms per instance, {workload}"
        if system == "orthanc":
            assert self.orthanc.process is not None
            rate, seconds = orthanc_cpu(self.orthanc.process.pid, send)
            self.record(f"{label}: all processes", system, ms_per_instance(seconds, files))
            return rate
        assert self.dicomflow.process is not None
        dsn = self.dicomflow.settings.effective_postgres_dsn()
        rate, split = dicomflow_cpu(self.dicomflow.process.pid, dsn, tenant, send)
        self.record(f"{label}: all processes", system, ms_per_instance(sum(split.values()), files))
        named = {process: seconds for process, seconds in split.items() if ms_per_instance(seconds, files) >= 0.5}
        for process, seconds in named.items():
            self.record(f"{label}: {process}", system, ms_per_instance(seconds, files))
        rest = sum(split.values()) - sum(named.values())
        self.record(f"{label}: every other process", system, ms_per_instance(rest, files))
        return rate

    # reads -----------------------------------------------------------------------------------------

    def load_for_reads(
        self, files: list[Path], ae_tenant: tuple[str, str] = ("BENCH0", "bench0")
    ) -> tuple[dict[str, Target], list[Path]]:
        """All data into both systems (a fresh Orthanc; dicomflow's tenant as given), plus the 512x512 CT
        uncompressed and JPEG 2000 under their own UIDs (the shared data gives both encodings one SOP
        Instance UID)."""
        ct = [restamped(p, self.workdir) for p in files if p.name in ("693_UNCR.dcm", "693_J2KR.dcm")]
        files = files + ct
        ae, tenant = ae_tenant
        self.orthanc.stop()
        self.orthanc.start(fresh=True)
        targets = self.targets(ae, tenant)
        for target in targets.values():
            dcmsend_rate(target.ae, target.dimse_port, files, 2)
        import asyncio

        studies = [
            s["0020000D"]["Value"][0]
            for s in requests.get(
                targets["dicomflow"].dicomweb + "/studies",
                params={"limit": 1000},
                headers=targets["dicomflow"].headers,
                timeout=60,
            ).json()
        ]

        asyncio.run(wait_completed(self.dicomflow.settings, [f"study:{tenant}:{s}" for s in studies], timeout=600))
        return targets, files

    def reads(self, targets: dict[str, Target], files: list[Path], label: str, qido_only: bool = False) -> None:
        cases = [c for c in qido_cases(files) if c[0].startswith("QIDO") or not qido_only]
        for rep in range(REPS):
            order = list(targets) if rep % 2 == 0 else list(reversed(list(targets)))
            for name, path, params, accept in cases:
                started = time.monotonic()
                for sample in range(SAMPLES):
                    if sample >= MIN_SAMPLES and time.monotonic() - started > CASE_SECONDS:
                        break  # Orthanc's 30 s queries at +20,000 studies: 3 samples each, not 20
                    for system in order:  # interleaved, so both systems see the same moments of noise
                        self.record(f"{label}{name} ms", system, 1000 * timed_get(targets[system], path, params, accept))

    def toshiba_metadata(self, targets: dict[str, Target]) -> None:
        toshiba = dcmread(next((DATA / "dcm_qa_toshiba").rglob("*.dcm")), stop_before_pixels=True)
        path = f"/studies/{toshiba.StudyInstanceUID}/series/{toshiba.SeriesInstanceUID}/metadata"
        for system, target in targets.items():
            self.record(
                "series metadata (520 inst) cold ms", system, 1000 * timed_get(target, path, {}, "application/dicom+json")
            )
            for _ in range(5):
                self.record(
                    "series metadata (520 inst) warm ms", system, 1000 * timed_get(target, path, {}, "application/dicom+json")
                )
        study_path = f"/studies/{toshiba.StudyInstanceUID}"
        size = sum(p.stat().st_size for p in (DATA / "dcm_qa_toshiba").rglob("*.dcm"))
        for _rep in range(REPS):
            for _ in range(RETRIEVE_SAMPLES):  # interleaved, so both systems see the same moments of noise
                for system, target in targets.items():
                    seconds = timed_get(target, study_path, {}, 'multipart/related; type="application/dicom"; transfer-syntax=*')
                    self.record("study retrieve (45 MB) MB/s", system, size / seconds / 1e6)

    def workflow_latency(self) -> None:
        ae, tenant = self.fresh_tenant()
        files = files_of(DATA / "dcm_qa_toshiba")
        dcmsend_rate(ae, self.dicomflow.settings.dimse.port, files, 1)
        last = time.monotonic()
        toshiba = dcmread(files[0], stop_before_pixels=True)
        import asyncio

        asyncio.run(wait_completed(self.dicomflow.settings, [f"study:{tenant}:{toshiba.StudyInstanceUID}"], timeout=600))
        self.record("last instance -> workflow complete s (520 inst)", "dicomflow", time.monotonic() - last)

    def report(self, parts: set[str]) -> Path:
        """bench/results/<date>.{json,md}; a run of only some parts gets its own file, never the day's."""
        RESULTS.mkdir(exist_ok=True)
        stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d")
        if parts != set(PARTS):
            stamp += "-partial-" + "+".join(p for p in PARTS if p in parts)
        rows, summary = [], {}
        for workload, systems in self.samples.items():
            stats = {s: {"median": statistics.median(v), "min": min(v), "max": max(v), "n": len(v)} for s, v in systems.items()}
            ratio = (
                (stats["dicomflow"]["median"] / stats["orthanc"]["median"])
                if "orthanc" in stats and stats["orthanc"]["median"]
                else None
            )
            summary[workload] = {"systems": stats, "ratio_dicomflow_over_orthanc": ratio}
            for system, st in stats.items():
                rows.append(
                    f"| {workload} | {system} | {st['median']:.2f} | {st['min']:.2f} | {st['max']:.2f} | "
                    + (f"{ratio:.3f}" if ratio is not None and system == "dicomflow" else "")
                    + " |"
                )
        out = RESULTS / f"{stamp}.json"
        for n in range(2, 100):  # never over an earlier run of the same day
            if not out.exists():
                break
            out = RESULTS / f"{stamp}-{n}.json"
        stamp = out.stem
        out.write_text(
            json.dumps(
                {
                    "date": stamp,
                    "machine": machine(),
                    "reps": REPS,
                    "synthetic_steps": list(SYNTHETIC_STEPS),
                    "index_steps": list(INDEX_STEPS),
                    "results": summary,
                },
                indent=2,
            )
        )
        table = "\n".join(["| workload | system | median | min | max | dicomflow/Orthanc |", "|---|---|---|---|---|---|", *rows])
        steps = f"synthetic growth to {', '.join(f'+{n:,}' for n in SYNTHETIC_STEPS)} studies, " if "synthetic" in parts else ""
        steps += f"index bulk-loaded to {', '.join(f'{n:,}' for n in INDEX_STEPS)} studies" if "qido-scale" in parts else ""
        (RESULTS / f"{stamp}.md").write_text(
            f"Run {stamp} on {machine()}, {REPS} repetitions, parts: "
            f"{', '.join(p for p in PARTS if p in parts)}"
            f"{'; ' + steps.rstrip(', ') if steps else ''}.\n\n{table}\n"
        )
        print(table)
        return out


PARTS = ("ingest", "reads", "synthetic", "qido-scale", "mixed", "scp-curve", "dimse-qr", "migration")


def migration(bench: Bench) -> None:
    """A legacy PACS (dcmqrscp) migrated into a fresh dicomflow and a fresh Orthanc, REPS times (bench/migration.py)."""
    from bench.migration import side_by_side  # imported here: bench.migration imports this module

    for rep in range(REPS):
        results = side_by_side(bench.workdir / f"migration-{rep}")
        if "failed" in results:
            raise RuntimeError(f"migration: {results['failed']}")
        for system in ("dicomflow", "orthanc"):
            bench.record("migration from dcmqrscp studies/s", system, results[system]["studies_per_second"])
            bench.record("migration from dcmqrscp instances/s", system, results[system]["instances_per_second"])
        processed = results["dicomflow"]["processed_instances_per_second"]
        bench.record("migration from dcmqrscp, every study workflow done, instances/s", "dicomflow", processed)


def wanted_parts() -> set[str]:
    """BENCH_PARTS=reads,qido-scale runs a subset (the reads part is needed by synthetic)."""
    parts = {p.strip() for p in os.environ.get("BENCH_PARTS", ",".join(PARTS)).split(",") if p.strip()}
    unknown = parts - set(PARTS)
    if unknown:
        raise SystemExit(f"bench: unknown BENCH_PARTS {sorted(unknown)}; choose from {', '.join(PARTS)}")
    if "synthetic" in parts:
        parts.add("reads")
    return parts


def main() -> int:
    os.environ["DICOMFLOW_ENV"] = "test"
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))  # so the servers below are stopped
    parts = wanted_parts()
    failed: list[str] = []

    def attempt(part: str, step) -> None:
        """A part that fails is reported and the others still run: one bug does not void the hour."""
        if part not in parts:
            return
        try:
            step()
        except Exception:  # noqa: BLE001 - reported below and in the exit code
            traceback.print_exc()
            failed.append(part)

    with tempfile.TemporaryDirectory(prefix="dicomflow-bench-") as tmp:
        bench = Bench(Path(tmp))
        loaded: dict = {}
        try:
            files = files_of(DATA)
            print(f"bench: {len(files)} files, {REPS} repetitions, systems alternate; parts {sorted(parts)}", flush=True)
            if parts & {"ingest", "reads", "qido-scale", "mixed"}:
                bench.dicomflow.start()
            attempt("ingest", lambda: bench.ingest(files))

            def reads() -> None:
                loaded["targets"], loaded["files"] = bench.load_for_reads(files)
                bench.reads(loaded["targets"], loaded["files"], "")
                bench.toshiba_metadata(loaded["targets"])
                bench.workflow_latency()

            attempt("reads", reads)
            if loaded:
                attempt("synthetic", lambda: synthetic_reads(bench, loaded["targets"], loaded["files"], DATA))
            attempt("qido-scale", lambda: qido_percentiles(bench))
            attempt("mixed", lambda: print(f"bench: mixed load runs in {mixed_load(bench, files, RESULTS)}"))
        finally:
            bench.orthanc.stop()
            bench.dicomflow.stop()
        attempt("scp-curve", lambda: scp_curve(bench, DATA))

        def dimse_qr() -> None:
            """C-FIND/C-MOVE/C-GET against its own dicomflow, Orthanc and storescp (bench/dimse_qr.py)."""
            from bench.dimse_qr import workloads  # imported here: bench.dimse_qr imports this module

            qr_failed: list[str] = []
            workloads(bench.workdir / "dimse-qr", bench.record, REPS, qr_failed)
            if qr_failed:
                raise RuntimeError(f"dimse-qr workloads failed: {', '.join(qr_failed)}")

        attempt("dimse-qr", dimse_qr)
        attempt("migration", lambda: migration(bench))
        print(f"bench: wrote {bench.report(parts - set(failed))}")
    if failed:
        print(f"bench: these parts failed (see the traceback above): {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
