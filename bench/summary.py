"""The README's benchmark table from a results file, each target marked met or missed by the numbers,
and its charts (bench/charts.py: ratios to Orthanc, scaling curves) written next to the file.

    python -m bench.summary bench/results/2026-11-23.json --charts docs/bench
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from bench.targets import (
    OWN_VALUE_TARGETS,
    READ_BASELINE,
    READ_SIDE,
    TARGETS,
    number,
    worse_than_baseline,
)


def _verdict(workload: str, ratio: float | None, own: float) -> str:
    if workload in OWN_VALUE_TARGETS:
        op, bound = OWN_VALUE_TARGETS[workload]
        value = own
        unit = " (own)"
    elif workload in TARGETS:
        op, bound = TARGETS[workload]
        value = ratio if ratio is not None else own
        unit = ""
    else:
        return ""
    met = value >= bound if op == ">=" else value <= bound
    return f"{op} {bound:g}{unit}: {'met' if met else 'missed'}"


def _against_baseline(workload: str, ratio: float | None, baseline: dict) -> str:
    """The read side's ratio beside the baseline run's, marked when it got worse."""
    before = baseline.get(workload, {}).get("ratio_dicomflow_over_orthanc")
    if ratio is None or before is None or not workload.startswith(READ_SIDE):
        return ""
    return f"{number(before)}: {'worse' if worse_than_baseline(workload, ratio, before) else 'not worse'}"


def table(results: dict, baseline: dict | None = None) -> str:
    baseline = baseline or {}
    rows = [
        f"| workload | dicomflow | Orthanc | storescp | dicomflow/Orthanc | target | ratio on {READ_BASELINE} |",
        "|---|---|---|---|---|---|---|",
    ]
    for workload, entry in results["results"].items():
        systems, ratio = entry["systems"], entry["ratio_dicomflow_over_orthanc"]
        median = {name: stats["median"] for name, stats in systems.items()}
        rows.append(
            f"| {workload} | {number(median.get('dicomflow'))} | {number(median.get('orthanc'))} | "
            f"{number(median.get('storescp'))} | {number(ratio)} | "
            f"{_verdict(workload, ratio, median.get('dicomflow', 0.0))} | {_against_baseline(workload, ratio, baseline)} |"
        )
    return "\n".join(rows)


def _baseline(results_dir: Path) -> dict:
    path = results_dir / f"{READ_BASELINE}.json"
    return json.loads(path.read_text())["results"] if path.exists() else {}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.summary", description=__doc__.splitlines()[0])
    parser.add_argument("results", nargs="?", type=Path, help="a results JSON (default: the newest in bench/results)")
    parser.add_argument(
        "--charts",
        metavar="DIR",
        type=Path,
        action="append",
        default=[],
        help="also copy the charts into DIR (repeatable), e.g. docs/bench for the README",
    )
    parser.add_argument("--no-charts", action="store_true", help="print the table only")
    args = parser.parse_args(argv)
    path = args.results or max(Path(__file__).parent.joinpath("results").glob("*.json"))
    results = json.loads(path.read_text())
    print(f"Run {results['date']} on {results['machine']}, {results['reps']} repetitions (medians).\n")
    print(table(results, _baseline(path.parent)))
    if not args.no_charts:
        from bench.charts import write_charts  # matplotlib (a dev extra) is imported only in there

        try:
            written = write_charts(results, path.stem, [path.parent, *args.charts])
        except ImportError as err:
            print(f"\nno charts: {err} (matplotlib is in the dev extra: pip install -e '.[dev]')", file=sys.stderr)
        else:
            print("\ncharts: " + ", ".join(str(p) for p in written))
    return 0


if __name__ == "__main__":
    sys.exit(main())
