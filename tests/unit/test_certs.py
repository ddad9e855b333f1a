"""The local CA must produce certificates that real TLS stacks accept: OpenSSL's verifier chains them to
ca.pem, Python's ssl completes a mutual-TLS handshake with them, and a client without a certificate is
refused. Key files must never be readable by anyone but the owner."""

from __future__ import annotations

import ipaddress
import shutil
import socket
import ssl
import stat
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID

from cluster.certs import CertError, init_ca, issue, ssl_client_context, ssl_server_context


@dataclass(frozen=True)
class Pki:
    dir: Path
    ca: Path
    server: tuple[Path, Path]
    client: tuple[Path, Path]


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    certs = tmp_path / "var" / "certs"
    ca = init_ca(certs)
    server = issue(certs, "server", "server", ["127.0.0.1", "localhost", "::1", "archive.example.org"])
    client = issue(certs, "modality1", "client")
    return Pki(certs, ca, server, client)


def load(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def signed_by(cert: x509.Certificate, ca: x509.Certificate) -> bool:
    """Check the signature itself rather than trusting issuer names, which anyone can copy."""
    public_key = ca.public_key()
    assert isinstance(public_key, ec.EllipticCurvePublicKey)
    assert cert.signature_hash_algorithm is not None
    try:
        public_key.verify(cert.signature, cert.tbs_certificate_bytes, ec.ECDSA(cert.signature_hash_algorithm))
    except InvalidSignature:
        return False
    return True


def test_layout_and_modes(pki: Pki) -> None:
    assert pki.ca == pki.dir / "ca.pem"
    assert pki.server == (pki.dir / "server.pem", pki.dir / "server.key")
    assert pki.client == (pki.dir / "modality1.pem", pki.dir / "modality1.key")
    assert mode(pki.dir) == 0o700
    for key in (pki.dir / "ca.key", pki.server[1], pki.client[1]):
        assert mode(key) == 0o600, key
    assert not [p for p in pki.dir.iterdir() if p.name.endswith(".tmp")]
    # the certificate file holds exactly one certificate and no key material
    text = pki.server[0].read_text()
    assert text.count("BEGIN CERTIFICATE") == 1 and "PRIVATE KEY" not in text
    assert text.rstrip().endswith("-----END CERTIFICATE-----")


def test_ca_extensions(pki: Pki) -> None:
    ca = load(pki.ca)
    basic = ca.extensions.get_extension_for_class(x509.BasicConstraints)
    assert basic.critical and basic.value.ca and basic.value.path_length == 0
    usage = ca.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.key_cert_sign and usage.crl_sign and not usage.digital_signature
    ca.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
    assert signed_by(ca, ca)
    assert isinstance(ca.public_key(), ec.EllipticCurvePublicKey)


def test_server_certificate(pki: Pki) -> None:
    ca, cert = load(pki.ca), load(pki.server[0])
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert set(san.get_values_for_type(x509.IPAddress)) == {ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("::1")}
    assert set(san.get_values_for_type(x509.DNSName)) == {"localhost", "archive.example.org"}
    # it also identifies the archive when it calls a DICOM TLS peer (outbound C-MOVE, N-EVENT-REPORT)
    assert list(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value) == [
        ExtendedKeyUsageOID.SERVER_AUTH,
        ExtendedKeyUsageOID.CLIENT_AUTH,
    ]
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    aki = cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    ski = ca.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert aki.key_identifier == ski.digest
    assert cert.issuer == ca.subject and signed_by(cert, ca)
    assert cert.signature_hash_algorithm is not None and cert.signature_hash_algorithm.name == hashes.SHA256.name


def test_client_certificate(pki: Pki) -> None:
    ca, cert = load(pki.ca), load(pki.client[0])
    assert list(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert set(san.get_values_for_type(x509.DNSName)) == {"localhost"}
    assert signed_by(cert, ca)
    assert not signed_by(load(pki.server[0]), load(pki.client[0]))


def test_openssl_verifies_chain(pki: Pki) -> None:
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("no openssl binary")
    for cert, purpose in ((pki.server[0], "sslserver"), (pki.client[0], "sslclient")):
        result = subprocess.run(
            [openssl, "verify", "-purpose", purpose, "-CAfile", str(pki.ca), str(cert)],
            capture_output=True,
            text=True,
            check=False,
        )
        assert result.returncode == 0, result.stdout + result.stderr
    wrong = subprocess.run(
        [openssl, "verify", "-purpose", "sslserver", "-CAfile", str(pki.ca), str(pki.client[0])],
        capture_output=True,
        text=True,
        check=False,
    )
    assert wrong.returncode != 0, "a client certificate must not pass as a server certificate"


@dataclass
class Served:
    port: int
    errors: list[BaseException]


@pytest.fixture
def mtls_server(pki: Pki) -> Iterator[Served]:
    """A one-connection-at-a-time TLS echo on loopback that demands a client certificate."""
    context = ssl_server_context(*pki.server, ca=pki.ca, require_client_cert=True)
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.1)  # poll, so teardown does not wait on a blocked accept()
    served = Served(listener.getsockname()[1], [])
    stop = threading.Event()

    def loop() -> None:
        while not stop.is_set():
            try:
                raw, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            raw.settimeout(10)
            try:
                with context.wrap_socket(raw, server_side=True) as conn:
                    conn.sendall(conn.recv(64))
            except (ssl.SSLError, OSError) as err:
                served.errors.append(err)

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    yield served
    stop.set()
    listener.close()
    thread.join(timeout=10)


def talk(port: int, context: ssl.SSLContext, host: str = "localhost") -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw, context.wrap_socket(raw, server_hostname=host) as conn:
        conn.sendall(b"ping")
        return conn.recv(64)


def test_mutual_tls_handshake(pki: Pki, mtls_server: Served) -> None:
    context = ssl_client_context(pki.ca, *pki.client)
    assert talk(mtls_server.port, context) == b"ping"
    assert talk(mtls_server.port, context, host="127.0.0.1") == b"ping"
    assert mtls_server.errors == []


def test_handshake_without_client_cert_fails(pki: Pki, mtls_server: Served) -> None:
    # In TLS 1.3 the client learns of the rejection only on its first read, so the failure may surface there.
    with pytest.raises((ssl.SSLError, ConnectionError)):
        assert talk(mtls_server.port, ssl_client_context(pki.ca)) == b"ping"


def test_client_rejects_host_not_in_san(pki: Pki, mtls_server: Served) -> None:
    with pytest.raises(ssl.SSLCertVerificationError):
        talk(mtls_server.port, ssl_client_context(pki.ca, *pki.client), host="elsewhere.example.org")


def test_init_twice_needs_force(pki: Pki) -> None:
    before = pki.ca.read_bytes()
    with pytest.raises(CertError, match="--force"):
        init_ca(pki.dir)
    assert pki.ca.read_bytes() == before
    init_ca(pki.dir, force=True)
    assert pki.ca.read_bytes() != before
    assert not signed_by(load(pki.server[0]), load(pki.ca))


@pytest.mark.parametrize("name", ["", "../evil", "a/b", ".hidden", "-x", "x" * 65, "sp ace", "ca", "CA"])
def test_bad_names_rejected(pki: Pki, name: str) -> None:
    with pytest.raises(CertError):
        issue(pki.dir, name, "server")


def test_issue_without_ca(tmp_path: Path) -> None:
    with pytest.raises(CertError, match=r"run `dicomflow certs init` first"):
        issue(tmp_path / "certs", "server", "server")
    assert not (tmp_path / "certs" / "server.key").exists()


def test_mismatched_client_pair_rejected(pki: Pki) -> None:
    with pytest.raises(CertError):
        ssl_client_context(pki.ca, cert=pki.client[0])
    with pytest.raises(CertError):
        ssl_client_context(pki.ca, cert=pki.client[0], key=pki.server[1])
