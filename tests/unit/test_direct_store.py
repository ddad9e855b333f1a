"""C-STOREs written straight to the socket (dimse/direct_store): the same bytes pynetdicom
would put on the wire, byte-identical objects at dcmtk's storescp, and a clear end (association
aborted, no status) when the peer breaks the protocol or goes silent."""

from __future__ import annotations

import contextlib
import socket
import struct
import subprocess
import threading
import time
from collections.abc import Iterator
from io import BytesIO
from pathlib import Path
from types import SimpleNamespace

import pydicom.data
import pytest
from pydicom import dcmread
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE, evt
from pynetdicom.dimse_messages import C_STORE_RQ, C_STORE_RSP
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.dsutils import split_dataset

import dimse
from archive.config.peers import AEEntry
from archive.dicom.part10_meta import HEAD_BYTES, read_layout
from dimse import direct_store
from dimse.direct_store import (
    DirectStoreUnavailable,
    PeerMisbehaved,
    StoreOrigin,
    c_store_command,
    c_store_response_command,
    pdata_pdu,
    send_file,
)
from dimse.store_scu import open_store_association
from testkit.running_stack import free_port
from tests.conftest import DATA

BUNDLED = Path(pydicom.data.__file__).parent / "test_files"


@pytest.fixture(scope="module", autouse=True)
def dimse_process() -> None:
    dimse.install()  # as in the SCP and worker processes: pynetdicom's DUL can lend its socket


def _objects() -> list[Path]:
    """Real files from scanners and toolkits: the shared data's MR series and its transfer syntaxes."""
    return sorted((DATA / "dcm_qa_ts").rglob("*.dcm")) + sorted((DATA / "dcm_qa_nih").rglob("*.dcm"))


# -- what goes on the wire --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "sop_instance, origin",
    [
        ("1.2.3.4", StoreOrigin()),
        ("1.2.3.45", StoreOrigin("QR_WORKSTATION", 7)),
        ("1.2.840.113619.2.55.3.604688119.969.1268071029.320", StoreOrigin("ODD", 65535)),
    ],
)
def test_the_command_set_is_the_one_pynetdicom_encodes(sop_instance: str, origin: StoreOrigin) -> None:
    req = C_STORE()
    req.MessageID, req.Priority = 513, 2
    req.AffectedSOPClassUID, req.AffectedSOPInstanceUID = "1.2.840.10008.5.1.4.1.1.4", sop_instance
    req.DataSet = BytesIO(b"\x08\x00\x16\x00")  # present: the command says so
    if origin.ae_title:
        req.MoveOriginatorApplicationEntityTitle, req.MoveOriginatorMessageID = origin.ae_title, origin.message_id
    message = C_STORE_RQ()
    message.primitive_to_message(req)
    theirs = next(message.encode_msg(1, 0)).presentation_data_value_list[0][1][1:]  # after the control byte
    ours = c_store_command("1.2.840.10008.5.1.4.1.1.4", sop_instance, 513, 2, origin)
    assert ours == theirs


@pytest.mark.parametrize(
    "sop_instance, status", [("1.2.3.4", 0x0000), ("1.2.840.113619.2.55.3.604688119.969.1268071029.320", 0xB007)]
)
def test_the_response_command_set_is_the_one_pynetdicom_encodes(sop_instance: str, status: int) -> None:
    rsp = C_STORE()
    rsp.MessageIDBeingRespondedTo, rsp.Status = 65535, status
    rsp.AffectedSOPClassUID, rsp.AffectedSOPInstanceUID = "1.2.840.10008.5.1.4.1.1.4", sop_instance
    message = C_STORE_RSP()
    message.primitive_to_message(rsp)
    theirs = next(message.encode_msg(1, 0)).presentation_data_value_list[0][1][1:]
    assert c_store_response_command("1.2.840.10008.5.1.4.1.1.4", sop_instance, 65535, status) == theirs


def test_pdus_parse_back_with_pynetdicom() -> None:
    from pynetdicom.pdu import P_DATA_TF

    pdu = P_DATA_TF()
    pdu.decode(pdata_pdu(3, 0x02, b"\x01\x02\x03\x04"))
    assert pdu.presentation_data_value_items[0].context_id == 3
    assert pdu.presentation_data_value_items[0].presentation_data_value == b"\x02\x01\x02\x03\x04"


def test_the_file_meta_read_by_hand_agrees_with_pydicom() -> None:
    files = [p for p in sorted(DATA.rglob("*.dcm")) + sorted(BUNDLED.rglob("*.dcm")) if p.is_file()]
    read = 0
    for path in files:
        layout = read_layout(path.read_bytes()[:HEAD_BYTES])
        if layout is None:
            continue  # no group length or no Part-10 header: pydicom's reader takes over
        meta, offset = split_dataset(path)
        assert (layout.dataset_offset, layout.transfer_syntax, layout.sop_instance_uid, layout.sop_class_uid) == (
            offset,
            meta.TransferSyntaxUID,
            meta.MediaStorageSOPInstanceUID,
            meta.MediaStorageSOPClassUID,
        ), path
        read += 1
    assert read > 800, f"only {read} files had a File Meta group to read"


def _meta_element(element: int, value: bytes) -> bytes:
    return struct.pack("<HH2sH", 2, element, b"UI", len(value)) + value


_UIDS = (
    _meta_element(0x0002, b"1.2.3.4\x00")
    + _meta_element(0x0003, b"1.2.3.5\x00")
    + _meta_element(0x0010, b"1.2.840.10008.1.2.1\x00")
)


@pytest.mark.parametrize(
    "head",
    [
        b"",
        b"\x00" * 200,
        b"\x00" * 128 + b"DICM" + b"\x02\x00\x00\x00UL\x04\x00" + struct.pack("<I", 10**9),
        # a group length that stops one element short: the rest of the group would go out as data
        b"\x00" * 128
        + b"DICM"
        + b"\x02\x00\x00\x00UL\x04\x00"
        + struct.pack("<I", len(_UIDS))
        + _UIDS
        + _meta_element(0x0012, b"1.2.3.6\x00")
        + b"\x08\x00\x16\x00UI\x02\x001\x00",
        # bytes that are no VR: pydicom reads that element as implicit VR (a 4-byte length), not as here
        b"\x00" * 128
        + b"DICM"
        + b"\x02\x00\x00\x00UL\x04\x00"
        + struct.pack("<I", len(_UIDS) + 8)
        + _UIDS
        + struct.pack("<HH2sH", 2, 0xFFEA, b"\xff\xff", 0)
        + b"\x08\x00\x16\x00UI\x02\x001\x00",
    ],
)
def test_short_or_lying_file_meta_is_left_to_pydicom(head: bytes) -> None:
    assert read_layout(head) is None


def test_a_file_meta_read_by_hand() -> None:
    head = (
        b"\x00" * 128
        + b"DICM"
        + b"\x02\x00\x00\x00UL\x04\x00"
        + struct.pack("<I", len(_UIDS))
        + _UIDS
        + b"\x08\x00\x16\x00UI\x02\x001\x00"
    )
    layout = read_layout(head)
    assert layout is not None and layout.transfer_syntax == "1.2.840.10008.1.2.1" and layout.dataset_offset == 144 + len(_UIDS)


# -- to a real storage SCP ----------------------------------------------------------------------------


@contextlib.contextmanager
def storescp(out: Path, *args: str) -> Iterator[int]:
    port = free_port()
    out.mkdir()
    proc = subprocess.Popen(
        ["storescp", "-aet", "STORESCP", "-od", str(out), *args, str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={"TCP_NODELAY": "1", "PATH": "/usr/bin:/bin"},
    )
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
                break
            time.sleep(0.05)
        yield port
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def _kinds(files: list[Path]) -> set[tuple[str, str]]:
    return {
        (str(d.file_meta.MediaStorageSOPClassUID), str(d.file_meta.TransferSyntaxUID))
        for d in (dcmread(f, stop_before_pixels=True) for f in files)
    }


def _dataset_bytes(path: Path) -> tuple[str, bytes]:
    data = path.read_bytes()
    layout = read_layout(data[:HEAD_BYTES])
    assert layout is not None
    return layout.sop_instance_uid, data[layout.dataset_offset :]


@pytest.mark.parametrize("max_pdu", ["16384", "4096"])
def test_objects_arrive_at_storescp_byte_for_byte(tmp_path: Path, max_pdu: str) -> None:
    """Every transfer syntax of the shared data that storescp accepted as stored (+xa), in PDUs of
    16 KB or 4 KB; an object whose syntax got no context is refused before anything is sent."""
    files = _objects()
    sent: dict[str, bytes] = {}
    with storescp(tmp_path / "in", "+xa", "--max-pdu", max_pdu) as port:
        assoc = open_store_association("DF", "STORESCP", AEEntry(host="127.0.0.1", port=port), _kinds(files))
        accepted = {(cx.abstract_syntax, cx.transfer_syntax[0]) for cx in assoc.accepted_contexts}
        try:
            for i, path in enumerate(files):
                meta = dcmread(path, stop_before_pixels=True).file_meta
                if (meta.MediaStorageSOPClassUID, meta.TransferSyntaxUID) not in accepted:
                    with pytest.raises(DirectStoreUnavailable):
                        send_file(assoc, path, i + 1)
                    continue
                assert send_file(assoc, path, i + 1, StoreOrigin("QR", 9)) == 0, path
                uid, data = _dataset_bytes(path)
                sent[uid] = data
            assert assoc.is_established
        finally:
            assoc.release()
    got = dict(map(_dataset_bytes, (tmp_path / "in").iterdir()))
    assert got == sent
    compressed = {str(dcmread(p, stop_before_pixels=True).file_meta.TransferSyntaxUID) for p in files} - {
        "1.2.840.10008.1.2",
        "1.2.840.10008.1.2.1",
        "1.2.840.10008.1.2.2",
    }
    assert len(sent) >= len(compressed) + 8, f"only {len(sent)} objects went as stored"


def test_a_context_the_peer_refused_goes_through_pynetdicom(tmp_path: Path) -> None:
    compressed = next(f for f in _objects() if dcmread(f, stop_before_pixels=True).file_meta.TransferSyntaxUID.is_compressed)
    with storescp(tmp_path / "in") as port:  # uncompressed syntaxes only
        assoc = open_store_association("DF", "STORESCP", AEEntry(host="127.0.0.1", port=port), _kinds([compressed]))
        try:
            with pytest.raises(DirectStoreUnavailable):
                send_file(assoc, compressed, 1)
            assert assoc.is_established
        finally:
            assoc.release()


def test_a_silent_peer_ends_the_association_without_a_status(tmp_path: Path) -> None:
    """A Storage SCP that never answers: the DIMSE timeout ends the wait, the association is aborted."""
    release = threading.Event()

    def hang(event: evt.Event) -> int:
        release.wait(10)
        return 0

    scp_ae = AE(ae_title="SILENT")
    scp_ae.add_supported_context("1.2.840.10008.5.1.4.1.1.4", [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
    port = free_port()
    server = scp_ae.start_server(("127.0.0.1", port), block=False, evt_handlers=[(evt.EVT_C_STORE, hang)])
    try:
        mr = next(f for f in _objects() if "dcm_qa_nih" in str(f))
        assoc = open_store_association("DF", "SILENT", AEEntry(host="127.0.0.1", port=port), _kinds([mr]), timeout=1)
        started = time.monotonic()
        assert send_file(assoc, mr, 1) is None
        assert time.monotonic() - started < 5
        assert assoc.is_aborted
    finally:
        release.set()
        server.shutdown()


# -- hostile answers, on a real socket ---------------------------------------------------------------


def _answer(*pdus: bytes) -> PeerMisbehaved | int:
    ours, theirs = socket.socketpair()
    with ours, theirs:
        for pdu in pdus:
            theirs.sendall(pdu)
        theirs.shutdown(socket.SHUT_WR)
        assoc = SimpleNamespace(dimse=SimpleNamespace(cancel_req={}))
        try:
            return direct_store._await_status(assoc, ours, 7, time.monotonic() + 2)  # type: ignore[arg-type]
        except PeerMisbehaved as err:
            return err


def _command(**elements: int) -> bytes:
    body = b"".join(
        struct.pack("<HHIH", 0, tag, 2, value)
        for tag, value in sorted(
            {0x0100: 0x8001, 0x0120: 7, 0x0800: 0x0101, 0x0900: 0, **{int(k[1:], 16): v for k, v in elements.items()}}.items()
        )
    )
    return struct.pack("<HHII", 0, 0, 4, len(body)) + body


def test_the_status_of_our_message_is_returned() -> None:
    assert _answer(pdata_pdu(1, 0x03, _command(x0900=0xB000))) == 0xB000


def test_a_status_split_over_two_pdus_is_reassembled() -> None:
    command = _command(x0900=0xA700)
    assert _answer(pdata_pdu(1, 0x01, command[:10]), pdata_pdu(1, 0x03, command[10:])) == 0xA700


def test_a_c_cancel_on_the_way_is_recorded_for_the_c_get_handler() -> None:
    cancel = _command(x0100=0x0FFF, x0120=5)
    ours, theirs = socket.socketpair()
    with ours, theirs:
        theirs.sendall(pdata_pdu(1, 0x03, cancel) + pdata_pdu(1, 0x03, _command()))
        assoc = SimpleNamespace(dimse=SimpleNamespace(cancel_req={}))
        assert direct_store._await_status(assoc, ours, 7, time.monotonic() + 2) == 0  # type: ignore[arg-type]
    assert list(assoc.dimse.cancel_req) == [5]


@pytest.mark.parametrize(
    "pdus, reason",
    [
        ((struct.pack(">BBIBBBB", 0x07, 0, 4, 0, 0, 2, 0),), "PDU type 0x07"),  # A-ABORT
        ((pdata_pdu(1, 0x03, _command(x0120=8)),), "message 7"),  # an answer to another message
        ((pdata_pdu(1, 0x02, b"\x00" * 8),), "data fragment"),  # a data set where a command must come
        ((pdata_pdu(1, 0x03, _command(x0800=0x0000)),), "announces a data set"),
        ((struct.pack(">BBI", 0x04, 0, 1 << 30),), "answer to a C-STORE"),  # a 1 GB PDU is not read
        ((pdata_pdu(1, 0x03, b"\x00\x00\x00\x00\xff\xff\xff\x7f"),), "malformed command set"),
        ((pdata_pdu(1, 0x01, _command()[:6]),), "closed the connection"),  # half a command, then nothing
    ],
)
def test_answers_outside_the_protocol_are_refused(pdus: tuple[bytes, ...], reason: str) -> None:
    outcome = _answer(*pdus)
    assert isinstance(outcome, PeerMisbehaved) and reason in str(outcome), outcome
