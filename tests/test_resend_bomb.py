"""A small JPEG 2000 object, stored, then re-sent under its SOP Instance UID with a codestream that
declares 20000 x 20000 pixels (its header still says 64 x 64), by C-STORE and by STOW-RS against the
running stack. Before the fix the receiving process decoded both objects itself, inside the
receipt's transaction: +2.3 GiB and seconds per re-send (bench/resend_memory.py). Now the
comparison runs in the decode pool, which reads the SIZ marker and refuses the frame undecoded;
the sender gets a reason, the receiving process's peak memory barely moves, and the stored object
is untouched."""

from __future__ import annotations

import io
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import psutil
import psycopg
import pytest
import requests
from pydicom import dcmread
from pynetdicom import AE

from archive.blobstore import LocalBlobStore
from archive.index.locks import STUDY_LOCKS
from archive.index.pool import open_index_pool
from archive.pixels.decode_pool import DecodePool
from archive.pixels.limits import INTERPRETER_BYTES, DecodeLimits
from archive.pixels.transcode import uncompressed_copy
from archive.services.receipt import Outcome, Receiver
from testkit.forged_j2k import small_and_forged
from tests.auth import auth_headers
from tests.conftest import STORE_AE, run

MiB = 2**20
# the old receipt peaked 2.3 GiB above its resting size; a refusal that decodes nothing stays far below
BOUND = 256 * MiB
STOW_TENANT = "resendbomb"


def c_store(stack, payload: bytes) -> tuple[int, str]:
    ds = dcmread(io.BytesIO(payload), stop_before_pixels=True)
    ae = AE(ae_title=STORE_AE)
    ae.add_requested_context(ds.file_meta.MediaStorageSOPClassUID, ds.file_meta.TransferSyntaxUID)
    assoc = ae.associate("127.0.0.1", stack.settings.dimse.port, ae_title=stack.settings.dimse.ae_title)
    assert assoc.is_established
    try:
        with tempfile.NamedTemporaryFile(suffix=".dcm") as fh:
            fh.write(payload)
            fh.flush()
            status = assoc.send_c_store(Path(fh.name))  # the file's bytes as they are
        return int(status.Status), str(status.get("ErrorComment", ""))
    finally:
        assoc.release()


def stow(stack, payload: bytes) -> tuple[int, str]:
    boundary = uuid.uuid4().hex
    body = f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode() + payload + f"\r\n--{boundary}--\r\n".encode()
    answer = requests.post(
        stack.url("/dicomweb/studies"),
        data=body,
        timeout=120,
        headers={
            **auth_headers(STOW_TENANT),
            "Accept": "application/dicom+json",
            "Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}',
        },
    )
    return answer.status_code, answer.text


def scp_processes(stack) -> list[psutil.Process]:
    """Every SCP actor (they share the DIMSE port): any of them may take the association."""
    port = stack.settings.dimse.port
    pids = {c.pid for c in psutil.net_connections("tcp") if c.status == psutil.CONN_LISTEN and c.laddr.port == port}
    return [psutil.Process(pid) for pid in pids if pid]


def replica_processes(stack) -> list[psutil.Process]:
    return [p for p in stack.descendants() if "ServeReplica:" in " ".join(p.cmdline())]


def _vm(proc: psutil.Process, key: str) -> int:
    for line in Path(f"/proc/{proc.pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(key)


def peak_growth(processes: list[psutil.Process], send: Callable[[], tuple[int, str]]) -> tuple[tuple[int, str], int, str]:
    """send()'s answer, the largest rise of peak RSS (VmHWM) over resting RSS among `processes`,
    and a report line with every process's numbers."""
    resting = {}
    for proc in processes:
        Path(f"/proc/{proc.pid}/clear_refs").write_text("5")  # VmHWM := VmRSS: the peak is this receipt's
        resting[proc.pid] = _vm(proc, "VmRSS")
    started = time.monotonic()
    answer = send()
    seconds = time.monotonic() - started
    growth = {pid: _vm(psutil.Process(pid), "VmHWM") - rss for pid, rss in resting.items()}
    report = f"{seconds:.2f} s; " + ", ".join(
        f"pid {pid}: RSS {resting[pid] // MiB} MiB, peak +{growth[pid] // MiB} MiB" for pid in resting
    )
    return answer, max(growth.values()), report


def stored_row(stack, sop_uid: str) -> tuple[str, str]:
    with psycopg.connect(stack.settings.effective_postgres_dsn()) as conn:
        [(key, sha256)] = conn.execute("SELECT blob_key, sha256 FROM instance WHERE sop_uid = %s", (sop_uid,)).fetchall()
    return key, sha256


@pytest.mark.parametrize("door", ["C-STORE", "STOW-RS"])
def test_a_forged_resend_is_refused_without_decoding_in_the_receiving_process(stack, door):
    send, processes = (c_store, scp_processes(stack)) if door == "C-STORE" else (stow, replica_processes(stack))
    assert processes, f"no receiving process found for {door}"
    original, forged = small_and_forged()
    sop_uid = str(dcmread(io.BytesIO(original), stop_before_pixels=True).SOPInstanceUID)
    status, _ = send(stack, original)
    assert status in (0, 200)
    key, sha256 = stored_row(stack, sop_uid)
    stored = (stack.settings.var_path / "blobs" / key).read_bytes()  # C-STORE's: its own File Meta, our dataset

    (status, reason), growth, report = peak_growth(processes, lambda: send(stack, forged))
    print(f"\n{door} forged re-send ({len(forged)} bytes): {status:#x} {report}")

    assert status in (0xC000, 409), reason  # STOW-RS: the failure carries C000 in its FailureReason
    assert "SIZ marker describes 20000 x 20000 pixels" in reason
    assert growth < BOUND, report
    assert stored_row(stack, sop_uid) == (key, sha256)
    assert (stack.settings.var_path / "blobs" / key).read_bytes() == stored


class LockWatchingPool(DecodePool):
    """The real decode pool, which also asks PostgreSQL, as each comparison starts, whether any
    transaction holds the study's receipt lock."""

    def __init__(self, dsn: str, tenant: str, study_uid: str) -> None:
        super().__init__(DecodeLimits(INTERPRETER_BYTES + 2**30, 60.0, 1))
        self.dsn, self.key, self.locks_seen = dsn, f"{tenant}/{study_uid}", []

    def run(self, fn, *args, **kwargs):
        with psycopg.connect(self.dsn) as conn:
            [(held,)] = conn.execute(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND classid::bigint = %s"
                " AND objid::bigint = (hashtext(%s)::bigint & 4294967295)",
                (STUDY_LOCKS, self.key),
            ).fetchall()
        self.locks_seen.append(held)
        return super().run(fn, *args, **kwargs)


def test_the_comparison_holds_no_lock_and_a_transcoded_resend_is_still_a_duplicate(stack, tmp_path):
    """Pixels are compared between two transactions: no lock on the study (nor a transaction) is
    held meanwhile, and the answer is the one the old in-transaction comparison gave."""
    original, _ = small_and_forged()
    source, copy = tmp_path / "j2k.dcm", tmp_path / "native.dcm"
    source.write_bytes(original)
    tenant, study_uid = "resendlocks", str(dcmread(source, stop_before_pixels=True).StudyInstanceUID)
    dsn = stack.settings.effective_postgres_dsn()
    blobs = LocalBlobStore(tmp_path / "blobs")

    with LockWatchingPool(dsn, tenant, study_uid) as pool:
        uncompressed_copy(pool, source, copy)
        pool.locks_seen.clear()

        async def receive_both():
            index = await open_index_pool(dsn, max_size=2)
            try:
                receiver = Receiver(blobs, index, decoder=pool)
                return [await receiver.receive(tenant, blobs.stage_bytes(p.read_bytes()), "test") for p in (source, copy)]
            finally:
                await index.close()

        first, again = run(receive_both())
    assert first.outcome is Outcome.STORED, first.reason
    assert again.outcome is Outcome.DUPLICATE and "another transfer syntax" in again.reason
    assert pool.locks_seen == [0]  # compared once, with the study unlocked
    assert blobs.read_bytes(first.blob_key) == original
