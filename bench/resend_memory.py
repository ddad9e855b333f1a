"""Memory and time of the receiving process for a JPEG 2000 object re-sent under a stored SOP
Instance UID with a codestream that declares 20000 x 20000 pixels (the header still says 64 x 64),
by C-STORE (the SCP actor) and STOW-RS (the Serve replica); issue 27 item 2. Starts its own stack
(auth off) under a temporary var dir and stops it after.

    .venv/bin/python -m bench.resend_memory
"""

from __future__ import annotations

import io
import json
import tempfile
import time
import uuid
from pathlib import Path

import psutil
import requests
from pydicom import dcmread
from pynetdicom import AE

from testkit.forged_j2k import small_and_forged
from testkit.running_stack import RunningStack, stack_overrides

MiB = 2**20


def _process(stack: RunningStack, marker: str) -> psutil.Process:
    for proc in stack.descendants():
        try:
            if marker in " ".join(proc.cmdline()):
                return proc
        except psutil.NoSuchProcess:
            continue
    raise RuntimeError(f"no {marker} process found")


def _vm(proc: psutil.Process, key: str) -> int:
    for line in Path(f"/proc/{proc.pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(key)


def c_store(stack: RunningStack, payload: bytes) -> str:
    ds = dcmread(io.BytesIO(payload), stop_before_pixels=True)
    ae = AE()
    ae.add_requested_context(ds.file_meta.MediaStorageSOPClassUID, ds.file_meta.TransferSyntaxUID)
    assoc = ae.associate("127.0.0.1", stack.settings.dimse.port, ae_title=stack.settings.dimse.ae_title)
    assert assoc.is_established, "association refused"
    try:
        with tempfile.NamedTemporaryFile(suffix=".dcm") as fh:
            fh.write(payload)
            fh.flush()
            status = assoc.send_c_store(Path(fh.name))
        return f"0x{status.Status:04X} {status.get('ErrorComment', '')}"
    finally:
        assoc.release()


def stow(stack: RunningStack, payload: bytes) -> str:
    boundary = uuid.uuid4().hex
    body = f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode() + payload + f"\r\n--{boundary}--\r\n".encode()
    answer = requests.post(
        stack.url("/dicomweb/studies"),
        data=body,
        timeout=600,
        headers={
            "Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}',
            "Accept": "application/dicom+json",
        },
    )
    return f"{answer.status_code} ...{answer.text[-200:]}"  # the failure's reason comes last


def measure(proc: psutil.Process, send: object, payload: bytes) -> dict[str, object]:
    Path(f"/proc/{proc.pid}/clear_refs").write_text("5")  # VmHWM := VmRSS: the peak is this receipt's
    before = _vm(proc, "VmRSS")
    started = time.monotonic()
    answer = send(payload)  # type: ignore[operator]
    seconds = time.monotonic() - started
    return {
        "answer": answer,
        "seconds": round(seconds, 2),
        "rss_before_MiB": round(before / MiB),
        "peak_above_MiB": round((_vm(proc, "VmHWM") - before) / MiB),
        "rss_after_MiB": round(_vm(proc, "VmRSS") / MiB),
    }


def main() -> None:
    var = Path(tempfile.mkdtemp(prefix="resendmem-")) / "var"
    stack = RunningStack(stack_overrides(var), var.parent / "up.log")
    stack.start()
    try:
        for name, send, marker in (
            ("C-STORE", lambda p: c_store(stack, p), "DimseScpActor"),
            ("STOW-RS", lambda p: stow(stack, p), "ServeReplica:"),
        ):
            original, forged = small_and_forged()
            proc = _process(stack, marker)
            print(name, "store", json.dumps(measure(proc, send, original)), flush=True)
            print(name, "re-send forged", f"({len(forged)} bytes)", json.dumps(measure(proc, send, forged)), flush=True)
    finally:
        stack.stop()


if __name__ == "__main__":
    main()
