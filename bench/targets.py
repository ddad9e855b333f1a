"""The targets the benches are judged by, and how their numbers are written: shared by the summary
table (bench/summary.py) and the charts (bench/charts.py)."""

from __future__ import annotations

import re

# workload -> (target on the dicomflow/Orthanc ratio, or on dicomflow's own value when no Orthanc)
TARGETS: dict[str, tuple[str, float]] = {
    # ingest: issue 33's targets (the earlier 1.2 / 1.5 / 2.0 were missed in every run and set before
    # the cost per instance was measured; issue 33 set these with the profile in hand)
    "C-STORE instances/s, 1 assoc": (">=", 0.9),
    "C-STORE instances/s, 4 assoc": (">=", 1.0),
    "STOW-RS instances/s, 4 thread(s)": (">=", 1.2),
    "synthetic load to +20,000 studies: all workflows done, s after last send": ("<=", 600.0),
    "at +2,000 studies: QIDO all studies ms": ("<=", 0.02),
    "QIDO instances of 520-instance series ms": ("<=", 0.05),
    "series metadata (520 inst) warm ms": ("<=", 0.05),
    "study retrieve (45 MB) MB/s": (">=", 1.0),
    "QIDO PatientName exact ms": ("<=", 1.0),
    "QIDO PatientName prefix* ms": ("<=", 1.0),
    "QIDO series of a study ms": ("<=", 1.0),
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
    # mixed load (bench/mixed_load.py, issue 33 item 2): writes at full speed while reads come at a fixed rate
    "mixed: instances/s written": (">=", 1.0),
    **{
        f"mixed: {kind} {p} ms": ("<=", 1.0)
        for kind in ("QIDO study list", "series metadata", "frames", "rendered")
        for p in ("p50", "p99")
    },
}


# targets on dicomflow's own number rather than the ratio (Orthanc's is shown beside it): issue 33's cost
OWN_VALUE_TARGETS: dict[str, tuple[str, float]] = {
    f"CPU ms per instance, C-STORE {n} assoc: all processes": ("<=", 8.0) for n in (1, 4)
}
TARGETS["migration from dcmqrscp instances/s"] = (">=", 1.0)

# issue 33: "the read-side ratios of the 2026-12-06 run do not get worse"; a ratio within this factor of
# the baseline's counts as the same (repetitions of one run spread about this much)
READ_BASELINE = "2026-12-06"
READ_BASELINE_TOLERANCE = 1.1
READ_SIDE = ("QIDO", "frames/", "rendered", "series metadata", "study retrieve", "at +")


def worse_than_baseline(workload: str, ratio: float, baseline: float) -> bool:
    """Whether a read-side ratio got worse than the baseline run's by more than the tolerance."""
    if higher_is_better(workload):
        return ratio < baseline / READ_BASELINE_TOLERANCE
    return ratio > baseline * READ_BASELINE_TOLERANCE


def higher_is_better(workload: str) -> bool:
    """A rate (instances/s, MB/s) is better higher, a time (ms, s) lower; a target's direction decides."""
    if workload in TARGETS:
        return TARGETS[workload][0] == ">="
    return re.search(r"\w/s\b", workload) is not None


def number(value: float | None) -> str:
    if value is None:
        return ""
    return (
        f"{value:.4f}"
        if abs(value) < 0.01
        else f"{value:.3f}"
        if abs(value) < 1
        else f"{value:.1f}"
        if abs(value) < 100
        else f"{value:.0f}"
    )
