"""QIDO-RS latency percentiles as the index grows: the queries a worklist or viewer sends, with
values drawn at random from the studies that exist, over one keep-alive connection."""

from __future__ import annotations

import random
import statistics
import time

import requests

from bench.synthetic import synthetic_patient


def scale_queries(loaded: int, rng: random.Random) -> list[tuple[str, dict[str, str]]]:
    """(kind, params) for one round; `loaded` studies numbered 0..loaded-1 exist."""
    who = synthetic_patient(rng.randrange(loaded))
    surname = who["PatientName"].split("^")[0]
    year = who["StudyDate"][:4]
    return [
        ("all studies (default limit)", {}),
        ("limit=25", {"limit": "25"}),
        ("PatientName exact", {"PatientName": who["PatientName"]}),
        ("PatientName prefix*", {"PatientName": surname[:-2] + "*"}),
        ("PatientID", {"PatientID": who["PatientID"]}),
        ("AccessionNumber", {"AccessionNumber": who["AccessionNumber"]}),
        ("StudyDate month range", {"StudyDate": f"{year}0301-{year}0331"}),
        ("ModalitiesInStudy + StudyDate year", {"ModalitiesInStudy": "MR", "StudyDate": f"{year}0101-{year}1231"}),
    ]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def measure(url: str, tenant: str, loaded: int, rounds: int = 40, seed: int = 7) -> dict[str, float]:
    """p50/p99 in ms over every query of `rounds` rounds, plus each kind's median."""
    rng = random.Random(seed)
    session = requests.Session()
    headers = {"x-tenant": tenant, "Accept": "application/dicom+json"}
    by_kind: dict[str, list[float]] = {}
    for _ in range(3):  # warm the connection and the plans
        session.get(url, params={"limit": "1"}, headers=headers, timeout=60)
    for _ in range(rounds):
        for kind, params in scale_queries(loaded, rng):
            started = time.perf_counter()
            response = session.get(url, params=params, headers=headers, timeout=60)
            _ = response.content
            elapsed = 1000 * (time.perf_counter() - started)
            if response.status_code != 200:
                raise RuntimeError(f"QIDO {params} at {loaded} studies: HTTP {response.status_code} {response.text[:200]}")
            by_kind.setdefault(kind, []).append(elapsed)
    session.close()
    everything = [v for values in by_kind.values() for v in values]
    out = {"p50": percentile(everything, 0.50), "p99": percentile(everything, 0.99), "n": len(everything)}
    out.update({f"median {kind}": statistics.median(values) for kind, values in by_kind.items()})
    return out
