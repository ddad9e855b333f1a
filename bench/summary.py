"""The README's benchmark table from a results file, each target marked met or missed by the numbers.

    python -m bench.summary bench/results/2026-11-23.json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

# workload -> (target on the dicomflow/Orthanc ratio, or on dicomflow's own value when no Orthanc)
TARGETS: dict[str, tuple[str, float]] = {
    "C-STORE instances/s, 1 assoc": (">=", 1.2),
    "C-STORE instances/s, 4 assoc": (">=", 1.5),
    "STOW-RS instances/s, 1 thread(s)": (">=", 2.0),
    "STOW-RS instances/s, 4 thread(s)": (">=", 2.0),
    "at +2,000 studies: QIDO all studies ms": ("<=", 0.02),
    "QIDO instances of 520-instance series ms": ("<=", 0.05),
    "series metadata (520 inst) warm ms": ("<=", 0.05),
    "study retrieve (45 MB) MB/s": (">=", 1.0),
    "frames/1 CT 512x512 uncompressed ms": ("<=", 1.0),
    "frames/1 CT 512x512 JPEG 2000 ms": ("<=", 1.0),
    "rendered JPEG CT 512x512 ms": ("<=", 1.5),
    "QIDO at 100,000 bulk-loaded studies: p99 ms": ("<=", 50.0),
    # DIMSE query/retrieve (bench/dimse_qr.py, issue 10)
    "C-FIND study at 20,000 studies: all studies ms": ("<=", 0.1),
    "C-FIND study at 20,000 studies: PatientName prefix* ms": ("<=", 0.1),
    "C-FIND study at 20,000 studies: PatientID exact ms": ("<=", 0.1),
    "C-FIND study at 20,000 studies: StudyDate month range ms": ("<=", 0.1),
    "C-MOVE study (45 MB, 520 inst) to storescp MB/s": (">=", 1.0),
    "C-GET study (45 MB, 520 inst) MB/s": (">=", 1.0),
}


def _number(value: float | None) -> str:
    if value is None:
        return ""
    return f"{value:.4f}" if abs(value) < 0.01 else f"{value:.3f}" if abs(value) < 1 else f"{value:.1f}" if abs(value) < 100 else f"{value:.0f}"


def _verdict(workload: str, ratio: float | None, own: float) -> str:
    if workload not in TARGETS:
        return ""
    op, bound = TARGETS[workload]
    value = ratio if ratio is not None else own
    met = value >= bound if op == ">=" else value <= bound
    return f"{op} {bound:g}: {'met' if met else 'missed'}"


def table(results: dict) -> str:
    rows = ["| workload | dicomflow | Orthanc | storescp | dicomflow/Orthanc | target |", "|---|---|---|---|---|---|"]
    for workload, entry in results["results"].items():
        systems, ratio = entry["systems"], entry["ratio_dicomflow_over_orthanc"]
        median = {name: stats["median"] for name, stats in systems.items()}
        rows.append(f"| {workload} | {_number(median.get('dicomflow'))} | {_number(median.get('orthanc'))} | "
                    f"{_number(median.get('storescp'))} | {_number(ratio)} | "
                    f"{_verdict(workload, ratio, median.get('dicomflow', 0.0))} |")
    return "\n".join(rows)


def main() -> int:
    path = Path(sys.argv[1]) if len(sys.argv) > 1 else max(Path(__file__).parent.joinpath("results").glob("*.json"))
    results = json.loads(path.read_text())
    print(f"Run {results['date']} on {results['machine']}, {results['reps']} repetitions (medians).\n")
    print(table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
