"""DIMSE listeners that one socket cannot block (issue 27 item 5), on a stack of their own with
small limits: one SCP process, dimse_max_associations = 2, eight connections per peer address, a
10 s ACSE timeout, DICOM TLS with client certificates, an AE table that ties certificates to AE
titles and names TLS peers, and unknown AEs admitted (auth = "none")."""

from __future__ import annotations

import contextlib
import hashlib
import queue
import socket
import ssl
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from pynetdicom import AE, evt
from pynetdicom.sop_class import StorageCommitmentPushModel  # type: ignore[attr-defined]

from testkit.running_stack import RunningStack, free_port, stack_overrides
from tests.test_commitment import request_commitment

VERIFICATION = "1.2.840.10008.1.1"
STUDY_FIND = "1.2.840.10008.5.1.4.1.2.2.1"
LOOPBACK = ["127.0.0.0/8"]
MAX_ASSOCIATIONS = 2
CONNECTIONS_PER_PEER = 8  # room for test_idle_sockets_take_no_association_slot's 2 idle + 3 + a closing echo
# long enough that a test's idle sockets are still open while it checks what they block, short
# enough that CLIENT_WAIT sees them dropped; pynetdicom's own ACSE timeout (30 s) and the old TLS
# handshake's wait (dimse_idle_seconds, 60 s) are both longer than CLIENT_WAIT
ACSE_TIMEOUT = 10.0
CLIENT_WAIT = 25.0  # how long a client here waits for anything
BOUND_CN, BOUND_FP, BOUND_OTHER = "BOUND_CN", "BOUND_FP", "BOUND_OTHER"
MOVER, TLS_DEST, TLS_COMMIT = "MOVER", "TLS_DEST", "TLS_COMMIT"


def fingerprint(pem: Path) -> str:
    digest = hashlib.sha256(ssl.PEM_cert_to_DER_cert(pem.read_text())).hexdigest().upper()
    return ":".join(digest[i : i + 2] for i in range(0, len(digest), 2))  # the form `openssl x509 -fingerprint` prints


@pytest.fixture(scope="module")
def ports() -> dict[str, int]:
    return {"dest": free_port(), "commit": free_port()}


@pytest.fixture(scope="module")
def guarded(tmp_path_factory, pki, ports) -> Iterator[RunningStack]:
    var = tmp_path_factory.mktemp("guarded") / "var"
    overrides = stack_overrides(
        var,
        auth="none",
        scp_processes=1,
        dimse_max_associations=MAX_ASSOCIATIONS,
        dimse_max_connections_per_peer=CONNECTIONS_PER_PEER,
        dimse_acse_timeout_seconds=ACSE_TIMEOUT,
        tls_cert_file=str(pki["server"]),
        tls_key_file=str(pki["server_key"]),
        tls_ca_file=str(pki["ca"]),
        ae_table={
            BOUND_CN: {"allowed_hosts": LOOPBACK, "tls_certificate": "modality"},  # the client certificate's CN
            BOUND_FP: {"allowed_hosts": LOOPBACK, "tls_certificate": fingerprint(pki["client"])},
            BOUND_OTHER: {"allowed_hosts": LOOPBACK, "tls_certificate": "another-modality"},
            MOVER: {"allowed_hosts": LOOPBACK, "services": ["store", "find", "move"]},
            TLS_DEST: {"host": "127.0.0.1", "port": ports["dest"], "tls": True, "services": []},
            TLS_COMMIT: {"host": "127.0.0.1", "port": ports["commit"], "tls": True},
        },
    )
    running = RunningStack(overrides, var.parent / "up.log")
    running.start()
    yield running
    result = running.stop()
    assert result.returncode == 0, result.stdout + result.stderr


def client_tls(pki) -> tuple[ssl.SSLContext, str]:
    context = ssl.create_default_context(cafile=str(pki["ca"]))
    context.load_cert_chain(pki["client"], pki["client_key"])
    return context, "127.0.0.1"


def server_tls(pki) -> ssl.SSLContext:
    """A TLS peer of the archive's: the archive's own certificate will do as its server certificate,
    and it wants a client certificate from the same CA."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(pki["ca"]))
    context.load_cert_chain(pki["server"], pki["server_key"])
    context.verify_mode = ssl.CERT_REQUIRED
    return context


@contextlib.contextmanager
def idle(port: int, count: int) -> Iterator[list[socket.socket]]:
    """Connected and silent: no TLS ClientHello, no A-ASSOCIATE-RQ."""
    held = [socket.create_connection(("127.0.0.1", port), timeout=CLIENT_WAIT) for _ in range(count)]
    time.sleep(0.5)  # accepted by the SCP before what the test does next
    try:
        yield held
    finally:
        for sock in held:
            sock.close()


def closed_by_server(sock: socket.socket) -> bool:
    """True when the server closed it (EOF or reset) before CLIENT_WAIT; False when it kept it open."""
    sock.settimeout(CLIENT_WAIT)
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def associate(
    stack: RunningStack,
    calling: str = "MONITOR",
    contexts: tuple[str, ...] = (VERIFICATION,),
    tls: tuple[ssl.SSLContext, str] | None = None,
):
    ae = AE(ae_title=calling)
    ae.connection_timeout = ae.acse_timeout = ae.network_timeout = ae.dimse_timeout = CLIENT_WAIT
    for context in contexts:
        ae.add_requested_context(context)
    s = stack.settings
    return ae.associate("127.0.0.1", s.dimse.tls_port if tls else s.dimse.port, ae_title=s.dimse.ae_title, tls_args=tls)


def echo(stack: RunningStack, calling: str = "MONITOR", tls: tuple[ssl.SSLContext, str] | None = None) -> int | None:
    """The C-ECHO status, or None when no association was made."""
    assoc = associate(stack, calling, tls=tls)
    if not assoc.is_established:
        return None
    try:
        status = assoc.send_c_echo()
        return int(status.Status) if status else None
    finally:
        assoc.release()


def eventually_echoes(stack: RunningStack) -> bool:
    """Connections closed by the test may count until the SCP has seen them close: try for a while."""
    deadline = time.monotonic() + 6 * ACSE_TIMEOUT
    while time.monotonic() < deadline:
        if echo(stack) == 0:
            return True
        time.sleep(1)
    return False


def restamped(data_dir: Path) -> Dataset:
    ds = dcmread(next((data_dir / "dcm_qa_nih").rglob("*.dcm")))
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    return ds


def store(stack: RunningStack, calling: str, ds: Dataset) -> int | None:
    ae = AE(ae_title=calling)
    ae.acse_timeout = ae.network_timeout = ae.dimse_timeout = CLIENT_WAIT
    ae.add_requested_context(ds.SOPClassUID, ds.file_meta.TransferSyntaxUID)
    assoc = ae.associate("127.0.0.1", stack.settings.dimse.port, ae_title=stack.settings.dimse.ae_title)
    if not assoc.is_established:
        return None
    try:
        status = assoc.send_c_store(ds)
        return int(status.Status) if status else None
    finally:
        assoc.release()


# -- idle sockets -------------------------------------------------------------------------------------


def test_idle_sockets_take_no_association_slot(guarded):
    """Two silent connections with dimse_max_associations = 2 refused every C-ECHO (seen before the
    fix); now only associations count, and the limit still holds for them."""
    with idle(guarded.settings.dimse.port, MAX_ASSOCIATIONS):
        s = guarded.settings
        result = subprocess.run(
            [
                "echoscu",
                "-to",
                "25",
                "-ta",
                "25",
                "-td",
                "25",
                "-aet",
                "MONITOR",
                "-aec",
                s.dimse.ae_title,
                "127.0.0.1",
                str(s.dimse.port),
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 0, result.stdout + result.stderr
        opened = [associate(guarded) for _ in range(MAX_ASSOCIATIONS + 1)]
        try:
            assert [a.is_established for a in opened] == [True] * MAX_ASSOCIATIONS + [False]
            rj = opened[-1].acceptor.primitive
            assert (rj.result, rj.result_source, rj.diagnostic) == (2, 3, 2)  # rejected-transient, local limit exceeded
        finally:
            for assoc in opened[:MAX_ASSOCIATIONS]:
                assoc.release()


def test_an_idle_socket_on_the_tls_port_does_not_hold_the_listener(guarded, pki):
    """The TLS handshake ran in the accept loop: one silent connection on the TLS port held every
    other TLS caller for the socket timeout (5.5 s with 6 s; 60 s by default, longer than this
    client waits: CLIENT_WAIT). Now it runs on the connection's own thread."""
    with idle(guarded.settings.dimse.tls_port, 1), idle(guarded.settings.dimse.port, 1):
        assert echo(guarded, "MONITOR", client_tls(pki)) == 0


def test_a_silent_connection_is_dropped_after_the_acse_timeout(guarded):
    """Plain and TLS: a connection that sends nothing is closed after dimse_acse_timeout_seconds,
    not kept for the idle timeout (pynetdicom's default ACSE timeout was 30 s, the TLS handshake 60 s)."""
    with idle(guarded.settings.dimse.port, 1) as plain, idle(guarded.settings.dimse.tls_port, 1) as tls:
        assert closed_by_server(plain[0]), "a silent plain connection was kept open"
        assert closed_by_server(tls[0]), "a silent connection on the TLS port was kept open"


def test_connections_per_peer_are_bounded_at_accept(guarded):
    """One address holds at most dimse_max_connections_per_peer connections, counted before TLS and
    the AE table; the next is closed at once, and the slots come back when they close."""
    assert eventually_echoes(guarded)  # earlier tests' connections are gone
    with idle(guarded.settings.dimse.port, CONNECTIONS_PER_PEER + 1) as held:
        assert closed_by_server(held[-1]), "a connection beyond the per-peer limit was kept open"
        assert echo(guarded) is None  # nor can this address open an association now
    assert eventually_echoes(guarded)


# -- who is calling ----------------------------------------------------------------------------------


def test_the_tls_client_certificate_is_tied_to_the_calling_ae(guarded, pki):
    tls = client_tls(pki)
    assert echo(guarded, BOUND_CN, tls) == 0  # by subject CN
    assert echo(guarded, BOUND_FP, tls) == 0  # by SHA-256 fingerprint
    refused = associate(guarded, BOUND_OTHER, tls=tls)  # another AE's certificate
    assert refused.is_rejected and (refused.acceptor.primitive.result_source, refused.acceptor.primitive.diagnostic) == (1, 3)
    plain = associate(guarded, BOUND_CN)  # no certificate at all
    assert plain.is_rejected and plain.acceptor.primitive.diagnostic == 3


def test_an_unknown_ae_may_store_and_commit_but_not_query(guarded, data_dir):
    ds = restamped(data_dir)
    assert store(guarded, "STRANGER", ds) == 0
    assoc = associate(guarded, "STRANGER", contexts=(STUDY_FIND,))
    assert assoc.is_established
    try:
        identifier = Dataset()
        identifier.QueryRetrieveLevel = "STUDY"
        identifier.StudyInstanceUID = ""
        answers = [
            (int(status.Status), str(status.get("ErrorComment", ""))) for status, _ in assoc.send_c_find(identifier, STUDY_FIND)
        ]
    finally:
        assoc.release()
    assert answers == [(0x0124, "STRANGER may not use find")]


# -- outbound TLS ------------------------------------------------------------------------------------


def test_c_move_to_a_tls_destination_goes_over_tls(guarded, pki, ports, data_dir, tmp_path):
    ds = restamped(data_dir)
    assert store(guarded, MOVER, ds) == 0
    out = tmp_path / "in"
    out.mkdir()
    log = tmp_path / "storescp.log"
    with open(log, "w") as sink:
        # dcmtk's storescp with DICOM TLS only, requiring a client certificate from the archive's CA
        scp = subprocess.Popen(
            [
                "storescp",
                "-v",
                "+tls",
                str(pki["server_key"]),
                str(pki["server"]),
                "+cf",
                str(pki["ca"]),
                "-aet",
                TLS_DEST,
                "-od",
                str(out),
                str(ports["dest"]),
            ],
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    try:
        time.sleep(0.5)
        s = guarded.settings
        move = subprocess.run(
            [
                "movescu",
                "-v",
                "-S",
                "-aet",
                MOVER,
                "-aec",
                s.dimse.ae_title,
                "-aem",
                TLS_DEST,
                "-k",
                "QueryRetrieveLevel=STUDY",
                "-k",
                f"StudyInstanceUID={ds.StudyInstanceUID}",
                "127.0.0.1",
                str(s.dimse.port),
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )
    finally:
        scp.terminate()
        scp.wait(timeout=10)
    got = [dcmread(p, stop_before_pixels=True) for p in out.iterdir()]
    assert [str(d.SOPInstanceUID) for d in got] == [str(ds.SOPInstanceUID)], move.stdout + move.stderr + log.read_text()
    assert move.returncode == 0


def test_n_event_report_to_a_tls_requester_goes_over_tls(guarded, pki, ports, data_dir):
    reports: queue.Queue = queue.Queue()

    def on_report(event):
        reports.put(str(event.event_information.TransactionUID))
        return 0x0000, None

    ae = AE(ae_title=TLS_COMMIT)
    ae.add_supported_context(StorageCommitmentPushModel, scu_role=True, scp_role=True)
    ae.add_requested_context(StorageCommitmentPushModel)
    server = ae.start_server(
        ("127.0.0.1", ports["commit"]),
        block=False,
        ssl_context=server_tls(pki),
        evt_handlers=[(evt.EVT_N_EVENT_REPORT, on_report)],
    )
    try:
        ds = restamped(data_dir)
        assert store(guarded, TLS_COMMIT, ds) == 0
        transaction = request_commitment(guarded, ae, [(str(ds.SOPClassUID), str(ds.SOPInstanceUID))])
        assert reports.get(timeout=90) == transaction
    finally:
        server.shutdown()
