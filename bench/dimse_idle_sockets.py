"""How long a C-ECHO takes while other peers hold idle sockets open (issue 27 item 5): two idle
TCP connections on the DIMSE port of an SCP with dimse_max_associations = 2, and one idle
connection on the DICOM TLS port, with dimse_idle_seconds = 6 (the issue's experiment).

    .venv/bin/python -m bench.dimse_idle_sockets
"""

from __future__ import annotations

import contextlib
import socket
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from pynetdicom import AE

from cluster.certs import init_ca, issue
from testkit.running_stack import RunningStack, stack_overrides

VERIFICATION = "1.2.840.10008.1.1"


@contextlib.contextmanager
def idle_sockets(port: int, count: int) -> Iterator[list[socket.socket]]:
    """Connected, and silent: no TLS ClientHello, no A-ASSOCIATE-RQ."""
    held = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(count)]
    time.sleep(0.5)  # accepted by the SCP before the echo comes
    try:
        yield held
    finally:
        for sock in held:
            sock.close()


def echo(stack: RunningStack, tls: tuple | None = None) -> tuple[str, float]:
    s = stack.settings
    ae = AE(ae_title="MONITOR")
    ae.add_requested_context(VERIFICATION)
    ae.connection_timeout = ae.acse_timeout = ae.network_timeout = 30
    started = time.monotonic()
    port = s.dimse.tls_port if tls else s.dimse.port
    assoc = ae.associate("127.0.0.1", port, ae_title=s.dimse.ae_title, tls_args=tls)
    outcome = "rejected" if assoc.is_rejected else "no association"
    if assoc.is_established:
        status = assoc.send_c_echo()
        outcome = f"C-ECHO status 0x{int(status.Status):04X}" if status else "no answer"
        assoc.release()
    return outcome, time.monotonic() - started


def main() -> None:
    import ssl

    folder = Path(tempfile.mkdtemp(prefix="idle-sockets-"))
    pki = folder / "pki"
    ca = init_ca(pki)
    cert, key = issue(pki, "archive", "server")
    client, client_key = issue(pki, "modality", "client")
    stack = RunningStack(
        stack_overrides(
            folder / "var",
            scp_processes=1,
            dimse_max_associations=2,
            dimse_idle_seconds=6,
            tls_cert_file=str(cert),
            tls_key_file=str(key),
            tls_ca_file=str(ca),
        ),
        folder / "up.log",
    )
    stack.start()
    try:
        context = ssl.create_default_context(cafile=str(ca))
        context.load_cert_chain(client, client_key)
        tls = (context, "127.0.0.1")
        echo(stack)  # warm
        # TLS first: a socket closed by its peer before its A-ASSOCIATE-RQ may still count for a while
        print("TLS C-ECHO, nothing idle:            %s in %.3f s" % echo(stack, tls))
        with idle_sockets(stack.settings.dimse.tls_port, 1):
            print("TLS C-ECHO, 1 idle TLS-port socket:  %s in %.3f s" % echo(stack, tls))
        time.sleep(8)  # past dimse_idle_seconds: the idle one is gone
        print("plain C-ECHO, nothing idle:          %s in %.3f s" % echo(stack))
        with idle_sockets(stack.settings.dimse.port, 2):
            print("plain C-ECHO, 2 idle plain sockets:  %s in %.3f s" % echo(stack))
    finally:
        stack.stop()


if __name__ == "__main__":
    main()
