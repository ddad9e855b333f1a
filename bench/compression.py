"""Issue 30 item 6, the codec part: what lossless compression saves on the bench's real CT and MR
data, and how fast it runs on this machine, per codec; each object through the same function the
lifecycle workflow runs in its decode pool (encode, decode again, compare bit for bit, write).
No stack needed.

    .venv/bin/python -m bench.compression
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

from pydicom import dcmread
from pydicom.uid import UID

from archive.lifecycle.compress import NotCompressible, write_compressed
from archive.lifecycle.rules import SYNTAXES

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def _uncompressed(modality: str) -> list[Path]:
    found = []
    for path in sorted(p for p in DATA.rglob("*") if p.is_file()):
        try:
            ds = dcmread(path, stop_before_pixels=True)
        except Exception:  # noqa: BLE001 - not DICOM (a README)
            continue
        if ds.get("Modality") == modality and not UID(str(ds.file_meta.TransferSyntaxUID)).is_compressed and "Rows" in ds:
            found.append(path)
    return found


def measure(files: list[Path], syntax: str) -> dict[str, float]:
    before = after = done = 0
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as scratch:
        for index, path in enumerate(files):
            target = Path(scratch) / f"{index}.dcm"
            try:
                after += write_compressed(str(path), str(target), SYNTAXES[syntax])
            except NotCompressible:
                continue
            before += path.stat().st_size
            done += 1
    seconds = time.perf_counter() - started
    return {
        "objects": done,
        "mb_before": round(before / 2**20, 1),
        "mb_after": round(after / 2**20, 1),
        "ratio": round(before / after, 2) if after else 0.0,
        "gb_per_hour": round(before / 2**30 / seconds * 3600, 1),
    }


def main() -> None:
    results = {}
    for modality in ("CT", "MR"):
        files = _uncompressed(modality)
        for syntax in sorted(SYNTAXES):
            results[f"{modality} {syntax}"] = measure(files, syntax)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
