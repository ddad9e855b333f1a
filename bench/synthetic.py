"""Synthetic studies for the QIDO-at-scale workloads: re-stamped copies of one real file, each its own
patient and study, with names, IDs, dates and accession numbers spread like a real worklist."""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path

from pydicom import dcmread
from pydicom.uid import generate_uid

SURNAMES = [
    "SMITH",
    "MUELLER",
    "GARCIA",
    "TANAKA",
    "DUBOIS",
    "ROSSI",
    "NOVAK",
    "SILVA",
    "KIM",
    "OKAFOR",
    "JENSEN",
    "IVANOV",
    "COHEN",
    "NGUYEN",
    "BROWN",
    "SCHMIDT",
    "LOPEZ",
    "SATO",
    "MARTIN",
    "WILSON",
]
GIVEN = ["ANNA", "JOHN", "MARIA", "PETER", "LINA", "OMAR", "SARA", "LUCA", "EVA", "IGOR"]


def synthetic_patient(number: int) -> dict[str, str]:
    """Deterministic identity for synthetic study `number`, so a run can query values it knows exist."""
    rng = random.Random(number)
    return {
        "PatientName": f"{SURNAMES[number % len(SURNAMES)]}{number // len(SURNAMES):05d}^{rng.choice(GIVEN)}",
        "PatientID": f"SYN{number:07d}",
        "AccessionNumber": f"ACC{number:08d}",
        "StudyDate": f"{2000 + number % 25:04d}{1 + rng.randrange(12):02d}{1 + rng.randrange(28):02d}",
        "StudyTime": f"{rng.randrange(24):02d}{rng.randrange(60):02d}00",
    }


def write_synthetic(source: Path, first: int, count: int, outdir: Path) -> Iterator[Path]:
    """Files first..first+count-1 under outdir; yields each path as it is written."""
    template = dcmread(source)
    outdir.mkdir(parents=True, exist_ok=True)
    for number in range(first, first + count):
        ds = template
        for keyword, value in synthetic_patient(number).items():
            setattr(ds, keyword, value)
        ds.StudyInstanceUID = generate_uid()
        ds.SeriesInstanceUID = generate_uid()
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.StudyDescription = "SYNTHETIC QIDO SCALE"
        path = outdir / f"syn{number:07d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        yield path
