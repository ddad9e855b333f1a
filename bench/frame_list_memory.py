"""Peak memory of the Serve replica answering WADO-RS frame lists (issue 27 item 3): a list that
repeats one frame (the attack), and a long valid list of a real multi-frame file, as stored and
decoded. Starts its own stack (auth off) under a temporary var dir and stops it after.

    .venv/bin/python -m bench.frame_list_memory
"""

from __future__ import annotations

import json
import tempfile
import uuid
from pathlib import Path

import psutil
import requests
from pydicom import dcmread

from testkit.running_stack import RunningStack, stack_overrides

DATA = Path("/work/shared/data/pydicom-data/data_store/data")
ONE_MIB = "US1_UNCR.dcm"  # 480 x 640 RGB, one native frame of 900 KiB
CINE = "color3d_jpeg_baseline.dcm"  # 120 JPEG baseline frames of 480 x 640 RGB
STORED, DECODED = "multipart/related; type=image/jpeg", "multipart/related; type=application/octet-stream"
MiB = 2**20


def _replica(stack: RunningStack) -> psutil.Process:
    for proc in stack.descendants():
        try:
            if "ServeReplica:" in " ".join(proc.cmdline()):
                return proc
        except psutil.NoSuchProcess:
            continue
    raise RuntimeError("no Serve replica process found")


def _vm(proc: psutil.Process, key: str) -> int:
    for line in Path(f"/proc/{proc.pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(key)


def _stow(stack: RunningStack, path: Path) -> str:
    boundary = uuid.uuid4().hex
    body = (
        f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode()
        + path.read_bytes()
        + f"\r\n--{boundary}--\r\n".encode()
    )
    answer = requests.post(
        stack.url("/dicomweb/studies"),
        data=body,
        timeout=120,
        headers={"Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}'},
    )
    answer.raise_for_status()
    h = dcmread(path, stop_before_pixels=True)
    return stack.url(f"/dicomweb/studies/{h.StudyInstanceUID}/series/{h.SeriesInstanceUID}/instances/{h.SOPInstanceUID}")


def _measure(replica: psutil.Process, url: str, accept: str) -> dict[str, object]:
    Path(f"/proc/{replica.pid}/clear_refs").write_text("5")  # VmHWM := VmRSS, so the peak is this request's
    before = _vm(replica, "VmRSS")
    answer = requests.get(url, headers={"Accept": accept}, timeout=300, stream=True)
    received = sum(len(chunk) for chunk in answer.iter_content(1 << 20))
    return {
        "status": answer.status_code,
        "path_chars": len(url.rsplit("/frames/", 1)[-1]),
        "body_MiB": round(received / MiB, 1),
        "rss_before_MiB": round(before / MiB),
        "peak_above_MiB": round((_vm(replica, "VmHWM") - before) / MiB),
    }


def main() -> None:
    var = Path(tempfile.mkdtemp(prefix="framemem-")) / "var"
    stack = RunningStack(stack_overrides(var), var.parent / "up.log")
    stack.start()
    try:
        one, cine = _stow(stack, DATA / ONE_MIB), _stow(stack, DATA / CINE)
        replica = _replica(stack)
        every = ",".join(str(n) for n in range(1, 121))
        cases = {
            "attack: 1 MiB frame x300 (599 chars)": (one + "/frames/" + ",".join(["1"] * 300), "*/*"),
            "120 frames as stored (JPEG)": (cine + "/frames/" + every, STORED),
            "120 frames decoded (native)": (cine + "/frames/" + every, DECODED),
        }
        for name, (url, accept) in cases.items():
            _measure(replica, url, accept)  # warm: the first call pays for imports and decode workers
            print(name, json.dumps(_measure(replica, url, accept)), flush=True)
    finally:
        stack.stop()


if __name__ == "__main__":
    main()
