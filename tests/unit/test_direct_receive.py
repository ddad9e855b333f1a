"""C-STOREs read straight from a receiving association's socket (dimse/direct_receive): dcmtk's
dcmsend stores real files, in PDUs large and small, and each data set arrives byte for byte, served
on the DUL's own thread; what the fast path does not take (a command set in pieces, other services)
is still pynetdicom's; a peer that breaks PS3.8 inside a data set, announces a PDU larger than this
side accepts, or drops the connection half-way is aborted, and leaves no file behind."""

from __future__ import annotations

import contextlib
import hashlib
import struct
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, AllStoragePresentationContexts, evt
from pynetdicom.association import Association
from pynetdicom.dsutils import split_dataset
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]  # generated at import

import dimse
from archive.config.peers import AEEntry
from dimse.direct_store import StoreOrigin, _await_status, c_store_command, context_for, pdata_pdu
from dimse.reactor import BusyAwareDUL
from dimse.server import serve_in_thread
from dimse.store_scu import open_store_association
from testkit.running_stack import free_port
from tests.conftest import DATA
from tests.unit.test_direct_store import storescp

MR = "1.2.840.10008.5.1.4.1.1.4"
EXPLICIT_LE = "1.2.840.10008.1.2.1"


@pytest.fixture(scope="module", autouse=True)
def dimse_process() -> None:
    dimse.install(receiving=True)  # as in the SCP process


@dataclass
class Received:
    stored: dict[str, str] = field(default_factory=dict)  # SOP Instance UID -> sha256 of the data set
    on_dul_thread: list[bool] = field(default_factory=list)
    syntaxes: dict[str, str] = field(default_factory=dict)


@contextlib.contextmanager
def scp(spool: Path, max_pdu: int = 1 << 20, idle: float = 10) -> Iterator[tuple[int, Received]]:
    """pynetdicom's server as the SCP actor runs it (dimse.server, the fence installed), a handler
    that records each data set; pynetdicom's data set files go to `spool`."""
    spool.mkdir(parents=True, exist_ok=True)
    received, before = Received(), tempfile.tempdir
    tempfile.tempdir = str(spool)

    def on_store(event: evt.Event) -> int:
        path = Path(event.dataset_path)
        meta, offset = split_dataset(path)
        uid = str(event.request.AffectedSOPInstanceUID)
        received.stored[uid] = hashlib.sha256(path.read_bytes()[offset:]).hexdigest()
        received.syntaxes[uid] = str(meta.TransferSyntaxUID)
        received.on_dul_thread.append(isinstance(threading.current_thread(), BusyAwareDUL))
        return 0x0000

    ae = AE("DIRECT")
    ae.maximum_pdu_size = max_pdu
    ae.network_timeout = ae.acse_timeout = ae.dimse_timeout = idle
    for context in AllStoragePresentationContexts:
        ae.add_supported_context(context.abstract_syntax, ALL_TRANSFER_SYNTAXES)
    ae.add_supported_context(Verification)
    port = free_port()
    serve_in_thread(ae, ("127.0.0.1", port), [(evt.EVT_C_STORE, on_store)], None, 16)
    try:
        yield port, received
    finally:
        ae.shutdown()
        tempfile.tempdir = before


def _dataset_sha(path: Path) -> str:
    _, offset = split_dataset(path)
    return hashlib.sha256(path.read_bytes()[offset:]).hexdigest()


def _real_files() -> list[Path]:
    """The shared data's transfer syntaxes (compressed and not) and an MR series."""
    return sorted((DATA / "dcm_qa_ts").rglob("*.dcm")) + sorted((DATA / "dcm_qa_nih").rglob("*.dcm"))[:20]


@pytest.mark.parametrize("max_pdu", [1 << 20, 4096])
def test_dcmsend_stores_real_files_byte_for_byte_on_the_dul_thread(tmp_path: Path, max_pdu: int) -> None:
    """What dcmsend puts on the wire (it re-encodes some files) is what dcmtk's storescp writes: the oracle."""
    files = _real_files()
    with scp(tmp_path / "spool", max_pdu) as (port, received):
        _dcmsend("DIRECT", port, files)
    with storescp(tmp_path / "storescp", "+xa") as port:
        _dcmsend("STORESCP", port, files)
    expected = {str(split_dataset(p)[0].MediaStorageSOPInstanceUID): _dataset_sha(p) for p in (tmp_path / "storescp").iterdir()}
    assert len(expected) == len(files)
    assert received.stored == expected
    assert received.on_dul_thread and all(received.on_dul_thread), "every C-STORE was read and served by the DUL"
    assert len(set(received.syntaxes.values())) > 3, "compressed and uncompressed syntaxes both came this way"
    assert list((tmp_path / "spool").iterdir()) == [], "pynetdicom removed each data set's file after its handler"


def _dcmsend(called: str, port: int, files: list[Path]) -> None:
    sent = subprocess.run(
        ["dcmsend", "-dn", "-nh", "-aec", called, "127.0.0.1", str(port), *map(str, files)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert sent.returncode == 0, sent.stderr


@contextlib.contextmanager
def requestor(port: int) -> Iterator[Association]:
    assoc = open_store_association("RAW", "DIRECT", AEEntry(host="127.0.0.1", port=port), [(MR, EXPLICIT_LE)], timeout=10)
    try:
        yield assoc
    finally:
        if assoc.is_established:
            assoc.release()


def _mr() -> tuple[str, bytes]:
    path = sorted((DATA / "dcm_qa_nih").rglob("*.dcm"))[0]
    meta, offset = split_dataset(path)
    assert str(meta.TransferSyntaxUID) == EXPLICIT_LE
    return str(meta.MediaStorageSOPInstanceUID), path.read_bytes()[offset:]


def _send(assoc: Association, *pdus: bytes) -> None:
    with assoc.dul.lend_socket() as sock:  # type: ignore[attr-defined]
        for pdu in pdus:
            sock.sendall(pdu)


def _wait_aborted(assoc: Association, seconds: float = 10) -> None:
    deadline = time.monotonic() + seconds
    while assoc.is_established and time.monotonic() < deadline:
        time.sleep(0.05)
    assert assoc.is_aborted, "the SCP aborted the association"


def test_a_command_set_in_two_pieces_is_left_to_pynetdicom(tmp_path: Path) -> None:
    uid, data = _mr()
    with scp(tmp_path / "spool") as (port, received), requestor(port) as assoc:
        cx = context_for(assoc, MR, EXPLICIT_LE)
        command = c_store_command(MR, uid, 7, 0, StoreOrigin())
        with assoc.dul.lend_socket() as sock:  # type: ignore[attr-defined]
            sock.sendall(pdata_pdu(cx, 0x01, command[:20]) + pdata_pdu(cx, 0x03, command[20:]) + pdata_pdu(cx, 0x02, data))
            status = _await_status(assoc, sock, 7, time.monotonic() + 10)
        assert status == 0x0000
        second = sorted((DATA / "dcm_qa_nih").rglob("*.dcm"))[1]
        assert assoc.send_c_store(second).Status == 0x0000  # the association goes on
    assert received.stored == {
        uid: hashlib.sha256(data).hexdigest(),
        str(split_dataset(second)[0].MediaStorageSOPInstanceUID): _dataset_sha(second),
    }
    assert received.on_dul_thread == [False, True], "pynetdicom served the first; the next was read directly again"


@pytest.mark.parametrize(
    "breach",
    [
        pytest.param(lambda cx, command, data: pdata_pdu(cx, 0x03, command), id="a-command-inside-the-data-set"),
        pytest.param(lambda cx, command, data: pdata_pdu(cx + 2, 0x02, data[100:]), id="another-context-inside-the-data-set"),
        pytest.param(lambda cx, command, data: struct.pack(">BBI", 0x04, 0, 100) + b"\x00" * 100, id="a-broken-pdv-item"),
        pytest.param(lambda cx, command, data: struct.pack(">BBI", 0x04, 0, 0x7FFFFFFF), id="a-2-GB-pdu"),
        pytest.param(lambda cx, command, data: struct.pack(">BBI", 0x09, 0, 4) + b"\x00" * 4, id="an-unknown-pdu-type"),
    ],
)
def test_a_peer_breaking_the_protocol_inside_a_data_set_is_aborted_and_nothing_is_kept(tmp_path: Path, breach: object) -> None:
    uid, data = _mr()
    with scp(tmp_path / "spool", max_pdu=16384) as (port, received), requestor(port) as assoc:
        cx = context_for(assoc, MR, EXPLICIT_LE)
        command = c_store_command(MR, uid, 9, 0, StoreOrigin())
        _send(assoc, pdata_pdu(cx, 0x03, command), pdata_pdu(cx, 0x00, data[:100]), breach(cx, command, data))  # type: ignore[operator]
        _wait_aborted(assoc)
        time.sleep(0.2)  # the SCP's DUL ends and closes what it had open
        assert received.stored == {}
        assert list((tmp_path / "spool").iterdir()) == [], "the half-received data set's file was removed"


def test_a_peer_that_drops_the_connection_half_way_leaves_no_file(tmp_path: Path) -> None:
    uid, data = _mr()
    with scp(tmp_path / "spool") as (port, received), requestor(port) as assoc:
        cx = context_for(assoc, MR, EXPLICIT_LE)
        _send(assoc, pdata_pdu(cx, 0x03, c_store_command(MR, uid, 11, 0, StoreOrigin())), pdata_pdu(cx, 0x00, data[:500]))
        deadline = time.monotonic() + 5
        while not list((tmp_path / "spool").iterdir()) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert list((tmp_path / "spool").iterdir()), "the data set was being written as it arrived"
        assoc.dul.socket.socket.close()  # type: ignore[union-attr]  # gone, without a release or an abort
        deadline = time.monotonic() + 10
        while list((tmp_path / "spool").iterdir()) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert list((tmp_path / "spool").iterdir()) == []
        assert received.stored == {}


def test_a_peer_silent_half_way_is_dropped_after_the_idle_timeout_and_leaves_no_file(tmp_path: Path) -> None:
    uid, data = _mr()
    with scp(tmp_path / "spool", idle=1.5) as (port, received), requestor(port) as assoc:
        cx = context_for(assoc, MR, EXPLICIT_LE)
        _send(assoc, pdata_pdu(cx, 0x03, c_store_command(MR, uid, 13, 0, StoreOrigin())), pdata_pdu(cx, 0x00, data[:500]))
        deadline = time.monotonic() + 15
        while (assoc.is_established or list((tmp_path / "spool").iterdir())) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not assoc.is_established, "the SCP ended the silent association"
        assert list((tmp_path / "spool").iterdir()) == []
        assert received.stored == {}


@pytest.mark.parametrize(
    "sop_class, sop_instance, syntax",
    [
        (MR, "1.2.3", EXPLICIT_LE),
        ("1.2.840.10008.5.1.4.1.1.2", "1.2.34", "1.2.840.10008.1.2"),
        (
            "1.2.840.10008.5.1.4.1.1.7",
            "1.2.826.0.1.3680043.8.498.12345678901234567890123456789012345678",
            "1.2.840.10008.1.2.4.90",
        ),
    ],
)
def test_the_file_meta_written_is_the_one_pydicom_writes_for_pynetdicom(sop_class: str, sop_instance: str, syntax: str) -> None:
    from io import BytesIO

    from pydicom.filewriter import write_file_meta_info
    from pydicom.uid import UID
    from pynetdicom import PYNETDICOM_IMPLEMENTATION_UID, PYNETDICOM_IMPLEMENTATION_VERSION
    from pynetdicom.dsutils import create_file_meta

    from archive.dicom.part10_meta import encode_file_meta

    theirs = BytesIO()
    meta = create_file_meta(sop_class_uid=UID(sop_class), sop_instance_uid=UID(sop_instance), transfer_syntax=UID(syntax))
    write_file_meta_info(theirs, meta)
    ours = encode_file_meta(sop_class, sop_instance, syntax, (PYNETDICOM_IMPLEMENTATION_UID, PYNETDICOM_IMPLEMENTATION_VERSION))
    assert ours == theirs.getvalue()
