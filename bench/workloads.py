"""The workloads, each the same requests against every system."""

from __future__ import annotations

import concurrent.futures
import os
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import requests
from pydicom import dcmread
from pydicom.errors import InvalidDicomError


@dataclass
class Target:
    name: str
    dicomweb: str  # root URL of the DICOMweb API
    ae: str
    dimse_port: int
    headers: dict[str, str] = field(default_factory=dict)


def files_of(root: Path) -> list[Path]:
    """Every DICOM file under root that dcmtk can send (Part-10, readable)."""
    out = []
    for path in sorted(p for p in root.rglob("*") if p.is_file() and p.suffix not in (".md", ".txt")):
        try:
            dcmread(path, stop_before_pixels=True)
        except (InvalidDicomError, OSError, ValueError):
            continue
        if "too_short" not in path.name:
            out.append(path)
    return out


def restamped(path: Path, workdir: Path) -> Path:
    """A copy of a real file with new Series and SOP Instance UIDs."""
    from pydicom.uid import generate_uid

    ds = dcmread(path)
    ds.SeriesInstanceUID = generate_uid()
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    out = workdir / f"restamped-{path.name}"
    ds.save_as(out, enforce_file_format=True)
    return out


def dcmsend_rate(called_ae: str, port: int, files: list[Path], associations: int, host: str = "127.0.0.1") -> float:
    """Instances per second for dcmsend over `associations` parallel associations."""
    chunks = [files[i::associations] for i in range(associations)]
    env = {**os.environ, "TCP_NODELAY": "1"}
    started = time.perf_counter()
    procs = [
        subprocess.Popen(
            ["dcmsend", "-dn", "-nh", "-aec", called_ae, host, str(port), *map(str, chunk)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env=env,
        )
        for chunk in chunks
    ]
    failures = [proc.communicate()[1] for proc in procs if proc.wait() not in (0, 1)]  # 1: some files refused
    elapsed = time.perf_counter() - started
    if failures:
        raise RuntimeError(f"dcmsend to {called_ae}@{host}:{port} failed: {failures[0][-500:]!r}")
    return len(files) / elapsed


def multipart_body(objects: list[bytes], boundary: str) -> bytes:
    """A STOW-RS request body: each object a part of its own."""
    parts = [f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode() + o + b"\r\n" for o in objects]
    return b"".join(parts) + f"--{boundary}--\r\n".encode()


def _multipart(paths: list[Path], boundary: str) -> bytes:
    return multipart_body([p.read_bytes() for p in paths], boundary)


def stow_rate(target: Target, files: list[Path], threads: int, per_request: int = 50) -> float:
    batches = [files[i : i + per_request] for i in range(0, len(files), per_request)]
    bodies = [_multipart(b, "benchboundary") for b in batches]  # built before the clock starts
    headers = {
        **target.headers,
        "Content-Type": 'multipart/related; type="application/dicom"; boundary=benchboundary',
        "Accept": "application/dicom+json",
    }
    session = requests.Session()

    def post(body: bytes) -> None:
        requests.post(target.dicomweb + "/studies", data=body, headers=headers, timeout=600)

    started = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(threads) as pool:
        list(pool.map(post, bodies))
    session.close()
    return len(files) / (time.perf_counter() - started)


def timed_get(target: Target, path: str, params: dict, accept: str) -> float:
    started = time.perf_counter()
    response = requests.get(target.dicomweb + path, params=params, headers={**target.headers, "Accept": accept}, timeout=600)
    _ = response.content
    elapsed = time.perf_counter() - started
    if response.status_code not in (200, 204):
        raise RuntimeError(f"{target.name} {path} {params}: HTTP {response.status_code} {response.text[:200]}")
    return elapsed


def qido_cases(files: list[Path]) -> list[tuple[str, str, dict, str]]:
    """(name, path, params, accept) for the QIDO and pixel workloads, from real values in the data."""
    toshiba = next(dcmread(p, stop_before_pixels=True) for p in files if "toshiba" in str(p))
    named = next(dcmread(p, stop_before_pixels=True) for p in files if "dcm_qa_nih" in str(p))
    name = str(named.PatientName)
    ct = next(p for p in files if p.name == "restamped-693_UNCR.dcm")
    ct_j2k = next(p for p in files if p.name == "restamped-693_J2KR.dcm")
    json_type = "application/dicom+json"
    cases = [
        ("QIDO all studies", "/studies", {"limit": 1000}, json_type),
        ("QIDO studies limit=25", "/studies", {"limit": 25}, json_type),
        ("QIDO PatientName exact", "/studies", {"PatientName": name}, json_type),
        ("QIDO PatientName prefix*", "/studies", {"PatientName": name[:4] + "*"}, json_type),
        ("QIDO PatientID", "/studies", {"PatientID": str(named.PatientID)}, json_type),
        ("QIDO StudyDate range", "/studies", {"StudyDate": "20100101-20201231"}, json_type),
        ("QIDO series of a study", f"/studies/{toshiba.StudyInstanceUID}/series", {}, json_type),
        (
            "QIDO instances of 520-instance series",
            f"/studies/{toshiba.StudyInstanceUID}/series/{toshiba.SeriesInstanceUID}/instances",
            {"limit": 1000},
            json_type,
        ),
    ]
    for label, path in (("frames/1 CT 512x512 uncompressed", ct), ("frames/1 CT 512x512 JPEG 2000", ct_j2k)):
        h = dcmread(path, stop_before_pixels=True)
        base = f"/studies/{h.StudyInstanceUID}/series/{h.SeriesInstanceUID}/instances/{h.SOPInstanceUID}"
        cases.append((label, base + "/frames/1", {}, "multipart/related; type=application/octet-stream; transfer-syntax=*"))
    h = dcmread(ct, stop_before_pixels=True)
    cases.append(
        (
            "rendered JPEG CT 512x512",
            f"/studies/{h.StudyInstanceUID}/series/{h.SeriesInstanceUID}/instances/{h.SOPInstanceUID}/rendered",
            {},
            "image/jpeg",
        )
    )
    return cases
