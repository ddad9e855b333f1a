"""Issue 12's curve: C-STORE instances/s and study workflows completed/s with 1, 2 and 3 Ray nodes
on this machine, the CPU split per process, and how long a joined node takes to answer its first
association. Orthanc (one process, same files, same number of associations) is the reference line.

    python -m bench.nodes          (make bench-nodes)

Each node is a real Ray node from `dicomflow join` on its own loopback address (127.0.0.2, .3), with
the dimse and worker roles; the modality side is dcmtk's dcmsend, two associations per node, each to
its node's own SCP. Blobs are in one shared directory (`blob_dir_shared`), as on an NFS mount: S3
through moto's Python server would measure moto. On 2 cores the curve may well be flat; the CPU
split says which process takes the cores.
"""

from __future__ import annotations

import concurrent.futures
import json
import statistics
import subprocess
import tempfile
import time
from collections import defaultdict
from datetime import date
from pathlib import Path
from typing import IO, Any

import psutil
from pydicom import dcmread
from pydicom.uid import generate_uid

from bench.cpu_split import CpuSplit
from bench.orthanc import Orthanc
from bench.run import DATA, RESULTS, machine
from bench.scale import SYNTHETIC_SOURCE, wait_ready
from bench.workloads import dcmsend_rate
from testkit.running_stack import DICOMFLOW, RunningStack, free_port, stack_overrides

NODE_IPS = ("127.0.0.1", "127.0.0.2", "127.0.0.3")
STUDIES, PER_STUDY = 60, 10  # 600 instances of 27 KB per step
ASSOCIATIONS_PER_NODE = 2
REPS = 2


def write_studies(folder: Path, studies: int = STUDIES, per_study: int = PER_STUDY, patient_prefix: str = "NODES") -> list[Path]:
    """`studies` new studies of `per_study` instances each: re-stamped copies of one real MR file."""
    template = dcmread(DATA / SYNTHETIC_SOURCE)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for study in range(studies):
        template.StudyInstanceUID, template.SeriesInstanceUID = generate_uid(), generate_uid()
        template.PatientID = f"{patient_prefix}{study:05d}"
        for number in range(per_study):
            template.SOPInstanceUID = template.file_meta.MediaStorageSOPInstanceUID = generate_uid()
            template.InstanceNumber = number + 1
            path = folder / f"{study:05d}-{number:04d}.dcm"
            template.save_as(path, enforce_file_format=True)
            paths.append(path)
    return paths


def echo_answers(ae: str, host: str, port: int) -> bool:
    return (
        subprocess.run(["echoscu", "-aet", ae, "-aec", "DICOMFLOW", host, str(port)], capture_output=True, timeout=30).returncode
        == 0
    )


class NodesBench:
    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        ae_table = {f"NODES{i}": {"tenant": f"nodes{i}", "services": ["store"]} for i in range(1, 20)}
        overrides = stack_overrides(
            workdir / "var", ae_table=ae_table, blob_dir_shared=True, stable_seconds=1.0, scp_processes=1, workflow_workers=1
        )
        self.stack = RunningStack(overrides, workdir / "up.log")
        self.orthanc = Orthanc(workdir / "orthanc", free_port(), free_port())
        self.joined: list[tuple[subprocess.Popen, IO[bytes]]] = []
        self.tenant = 0
        self.results: dict[str, Any] = {"steps": []}

    def join(self, ip: str) -> float:
        """Seconds from `dicomflow join` until the node's own SCP answers a C-ECHO."""
        address = (self.stack.settings.var_path / "run" / "ray_address").read_text().strip()
        log = open(self.workdir / f"join-{ip}.log", "ab")  # noqa: SIM115 - open while the node runs
        started = time.monotonic()
        node = subprocess.Popen(
            [DICOMFLOW, "join", address, "--node-ip", ip, "--roles", "dimse,worker", "--num-cpus", "1"],
            env=self.stack.env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        self.joined.append((node, log))
        while not echo_answers("NODES1", ip, self.stack.settings.dimse.port):
            if node.poll() is not None or time.monotonic() - started > 300:
                raise RuntimeError(f"node {ip} did not take an association: see {log.name}")
            time.sleep(0.25)
        return time.monotonic() - started

    def scale_workers(self, count: int) -> None:
        result = self.stack.cli("scale", f"workers={count}", timeout=600)
        if result.returncode != 0:
            raise RuntimeError(f"scale workers={count} failed: {result.stderr}")

    def roots(self) -> dict[str, psutil.Process]:
        assert self.stack.process is not None
        nodes = {"head": psutil.Process(self.stack.process.pid)}
        nodes.update({ip: psutil.Process(proc.pid) for ip, (proc, _) in zip(NODE_IPS[1:], self.joined)})
        return nodes

    def send(self, nodes: int, files: list[Path]) -> dict[str, Any]:
        """All files over ASSOCIATIONS_PER_NODE associations to each node's own SCP, in parallel."""
        self.tenant += 1
        ae, tenant = f"NODES{self.tenant}", f"nodes{self.tenant}"
        split = CpuSplit(self.roots())
        split.start()
        started = time.monotonic()
        with concurrent.futures.ThreadPoolExecutor(nodes) as pool:
            senders = [
                pool.submit(dcmsend_rate, ae, self.stack.settings.dimse.port, files[i::nodes], ASSOCIATIONS_PER_NODE, ip)
                for i, ip in enumerate(NODE_IPS[:nodes])
            ]
            for sender in senders:
                sender.result()
        sent = time.monotonic() - started
        wait_ready(self.stack.settings.effective_postgres_dsn(), tenant, STUDIES)
        done = time.monotonic() - started
        return {
            "instances_per_s": len(files) / sent,
            "workflows_per_s": STUDIES / done,
            "cpu_seconds": split.stop(),
            "seconds_to_all_ready": done,
        }

    def orthanc_rate(self, files: list[Path], associations: int) -> float:
        self.orthanc.stop()
        self.orthanc.start(fresh=True)
        return dcmsend_rate("ORTHANC", self.orthanc.dicom_port, files, associations)

    def run(self) -> None:
        self.stack.start()
        try:
            for count in (1, 2, 3):
                joined = self.join(NODE_IPS[count - 1]) if count > 1 else None
                self.scale_workers(count)
                runs = [self.send(count, write_studies(self.workdir / f"n{count}-r{rep}")) for rep in range(REPS)]
                orthanc = [
                    self.orthanc_rate(write_studies(self.workdir / f"o{count}-r{rep}"), ASSOCIATIONS_PER_NODE * count)
                    for rep in range(REPS)
                ]
                step = summarize_step(count, joined, runs, orthanc)
                print(json.dumps(step, indent=2), flush=True)
                self.results["steps"].append(step)
        finally:
            self.stop()

    def stop(self) -> None:
        self.orthanc.stop()
        for node, log in self.joined:
            node.terminate()
            try:
                node.wait(timeout=90)
            except subprocess.TimeoutExpired:
                node.kill()
            log.close()
        self.stack.stop()


def summarize_step(nodes: int, join_seconds: float | None, runs: list[dict[str, Any]], orthanc: list[float]) -> dict[str, Any]:
    cpu: dict[str, float] = defaultdict(float)
    for run in runs:
        for label, seconds in run["cpu_seconds"].items():
            cpu[label] += seconds / (len(runs) * STUDIES * PER_STUDY) * 1000  # ms per instance
    return {
        "nodes": nodes,
        "associations": ASSOCIATIONS_PER_NODE * nodes,
        "join_to_first_association_s": join_seconds,
        "cstore_instances_per_s": statistics.median(r["instances_per_s"] for r in runs),
        "workflows_per_s": statistics.median(r["workflows_per_s"] for r in runs),
        "orthanc_instances_per_s": statistics.median(orthanc),
        "cpu_ms_per_instance": {label: round(ms, 2) for label, ms in sorted(cpu.items(), key=lambda item: -item[1])},
    }


def markdown(results: dict[str, Any]) -> str:
    rows = [
        "| Ray nodes | associations | C-STORE inst/s | Orthanc inst/s (1 process) | ratio | study workflows/s | "
        "join to first association (s) | CPU ms per instance, top 5 |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for step in results["steps"]:
        top = ", ".join(f"{label} {ms}" for label, ms in list(step["cpu_ms_per_instance"].items())[:5])
        joined = "-" if step["join_to_first_association_s"] is None else f"{step['join_to_first_association_s']:.1f}"
        rows.append(
            f"| {step['nodes']} | {step['associations']} | {step['cstore_instances_per_s']:.1f} | "
            f"{step['orthanc_instances_per_s']:.1f} | {step['cstore_instances_per_s'] / step['orthanc_instances_per_s']:.2f} | "
            f"{step['workflows_per_s']:.2f} | {joined} | {top} |"
        )
    return "\n".join(rows) + "\n"


def main() -> int:
    workdir = Path(tempfile.mkdtemp(prefix="dicomflow-nodes-"))
    bench = NodesBench(workdir)
    bench.results.update(date=str(date.today()), machine=machine(), studies=STUDIES, per_study=PER_STUDY, reps=REPS)
    bench.run()
    RESULTS.mkdir(exist_ok=True)
    stem = RESULTS / f"{date.today()}-nodes"
    stem.with_suffix(".json").write_text(json.dumps(bench.results, indent=2) + "\n")
    stem.with_suffix(".md").write_text(markdown(bench.results))
    print(markdown(bench.results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
