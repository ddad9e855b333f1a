"""A local certificate authority for DICOM TLS (port 2762) and HTTPS.

`dicomflow certs init` creates the CA under `{var_dir}/certs`; `dicomflow certs issue NAME` signs a
server or client certificate with it. Layout, all PEM:

    {var_dir}/certs/            0700
    {var_dir}/certs/ca.key      0600   CA private key
    {var_dir}/certs/ca.pem             CA certificate (the trust anchor to hand to peers)
    {var_dir}/certs/NAME.key    0600   leaf private key
    {var_dir}/certs/NAME.pem           leaf certificate only, no chain and no key

Keys are EC P-256: dcmtk 3.6.7 (OpenSSL 3) negotiates ECDHE-ECDSA under its default BCP 195 profile,
Python's ssl and browsers do too, and the keys are small and fast to make.
"""

from __future__ import annotations

import argparse
import datetime as dt
import ipaddress
import os
import re
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from archive.config.tls import CertError, ssl_client_context, ssl_server_context

__all__ = ["CertError", "init_ca", "issue", "ssl_client_context", "ssl_server_context", "certs_dir_for"]

Kind = Literal["server", "client"]

CA_KEY = "ca.key"
CA_CERT = "ca.pem"
DEFAULT_HOSTS: tuple[str, ...] = ("127.0.0.1", "localhost")
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
# Backdate validity so a peer whose clock is slightly behind does not reject a fresh certificate.
CLOCK_SKEW = dt.timedelta(minutes=5)

# a server certificate is the archive's (or a peer node's) identity both ways: it answers on the
# DICOM TLS port and HTTPS, and it calls out with it too (C-MOVE destinations and N-EVENT-REPORTs
# whose AE table entry says tls = true); peers that check a client certificate's purpose want clientAuth
_EKU: dict[str, list[x509.ObjectIdentifier]] = {
    "server": [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH],
    "client": [ExtendedKeyUsageOID.CLIENT_AUTH],
}


def serves_tls(cert_file: Path) -> bool:
    """Whether a certificate may answer as a server (serverAuth, or no purpose named): what a node's
    Ray processes need under Ray's mutual TLS, where every node also serves the others."""
    cert = x509.load_pem_x509_certificate(Path(cert_file).read_bytes())
    try:
        usage = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        return True
    return ExtendedKeyUsageOID.SERVER_AUTH in usage


def names_host(cert_file: Path, host: str) -> bool:
    """Whether the certificate's subject alternative names include `host` (an address or a name):
    what a TLS client checks when it dials that host."""
    cert = x509.load_pem_x509_certificate(Path(cert_file).read_bytes())
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return False
    try:
        return ipaddress.ip_address(host) in san.get_values_for_type(x509.IPAddress)
    except ValueError:
        return host.lower() in (name.lower() for name in san.get_values_for_type(x509.DNSName))


def certs_dir_for(var_dir: Path) -> Path:
    """One place that decides where the CA lives, so the CLI and the servers agree."""
    return var_dir / "certs"


# --- files -------------------------------------------------------------------------------------


def _ensure_dir(certs_dir: Path) -> None:
    """Private keys live here, so the directory must not be listable by others even if it pre-existed."""
    certs_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    certs_dir.chmod(0o700)


def _write_atomic(path: Path, data: bytes, mode: int) -> None:
    """Write via a temp file created with `mode` and renamed into place: readers never see a half-written
    file, and a key is never world-readable, not even between creation and chmod."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")  # mkstemp opens 0600
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        Path(tmp).replace(path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    """Unencrypted PKCS#8, since the archive starts unattended; the 0600 mode is the protection."""
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    _write_atomic(path, pem, 0o600)


def _write_cert(path: Path, cert: x509.Certificate) -> None:
    _write_atomic(path, cert.public_bytes(serialization.Encoding.PEM), 0o644)


# --- building certificates ------------------------------------------------------------------------


def _new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _validity(days: int, not_after_cap: dt.datetime | None = None) -> tuple[dt.datetime, dt.datetime]:
    """A leaf must not outlive its CA: verifiers would reject it after the CA expires anyway."""
    if days < 1:
        raise CertError(f"days must be at least 1, got {days}")
    now = dt.datetime.now(dt.UTC)
    not_after = now + dt.timedelta(days=days)
    if not_after_cap is not None:
        not_after = min(not_after, not_after_cap)
    return now - CLOCK_SKEW, not_after


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "dicomflow"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _ca_certificate(key: ec.EllipticCurvePrivateKey, common_name: str, days: int) -> x509.Certificate:
    """path_length=0: this CA signs leaves only, so a stolen leaf key cannot mint further certificates."""
    not_before, not_after = _validity(days)
    subject = _name(common_name)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(cert_sign=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )


def _key_usage(cert_sign: bool) -> x509.KeyUsage:
    """A CA only signs certificates and CRLs; an ECDSA leaf only signs TLS handshakes (digitalSignature)."""
    return x509.KeyUsage(
        digital_signature=not cert_sign,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=cert_sign,
        crl_sign=cert_sign,
        encipher_only=False,
        decipher_only=False,
    )


def _san(hosts: Sequence[str]) -> x509.SubjectAlternativeName:
    """Peers check hostnames against the SAN only (the CN is ignored), so every way of reaching the
    service must be listed; an IP literal must be an IPAddress entry or verification fails."""
    names: list[x509.GeneralName] = []
    for host in hosts:
        host = host.strip()
        if not host:
            raise CertError("empty host name: pass host names or IP addresses such as 127.0.0.1 or archive.example.org")
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(_dns_name(host))
    return x509.SubjectAlternativeName(names)


def _dns_name(host: str) -> x509.DNSName:
    if not host.isascii() or any(c.isspace() for c in host):
        raise CertError(f"host {host!r} is not a usable DNS name: use its ASCII (punycode) form or an IP address")
    return x509.DNSName(host.lower())


def _leaf_certificate(
    ca_key: ec.EllipticCurvePrivateKey,
    ca_cert: x509.Certificate,
    key: ec.EllipticCurvePrivateKey,
    name: str,
    kind: Kind,
    hosts: Sequence[str],
    days: int,
) -> x509.Certificate:
    not_before, not_after = _validity(days, ca_cert.not_valid_after_utc)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(name))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(cert_sign=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage(_EKU[kind]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(_authority_key_id(ca_cert), critical=False)
    )
    if hosts:
        builder = builder.add_extension(_san(hosts), critical=False)
    return builder.sign(ca_key, hashes.SHA256())


def _authority_key_id(ca_cert: x509.Certificate) -> x509.AuthorityKeyIdentifier:
    """Taken from the CA's own SKI so chain building matches exactly, even after a CA re-init."""
    ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    return x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)


# --- loading --------------------------------------------------------------------------------------


def _load_ca(certs_dir: Path) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key_path, cert_path = certs_dir / CA_KEY, certs_dir / CA_CERT
    if not key_path.exists() or not cert_path.exists():
        raise CertError("no CA yet: run `dicomflow certs init` first")
    try:
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    except (ValueError, TypeError) as err:
        raise CertError(f"the CA in {certs_dir} is unreadable ({err}): run `dicomflow certs init --force` to replace it") from err
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.public_key() != cert.public_key():
        raise CertError(f"{key_path} does not match {cert_path}: run `dicomflow certs init --force` to replace the CA")
    return key, cert


def _check_name(name: str) -> None:
    """The name becomes a file name next to the CA, so it must not escape the directory or hit ca.*."""
    if not NAME_PATTERN.match(name):
        raise CertError(
            f"bad certificate name {name!r}: use 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit"
        )
    if name.lower() == "ca":
        raise CertError("the name 'ca' is reserved for the certificate authority: pick another name, e.g. 'server'")


# --- public API -----------------------------------------------------------------------------------


def init_ca(certs_dir: Path, common_name: str = "dicomflow local CA", days: int = 3650, force: bool = False) -> Path:
    """Create the CA; returns the path of ca.pem. Refuses to replace an existing CA without `force`,
    because every certificate it issued (and every peer that trusts it) would stop working."""
    key_path, cert_path = certs_dir / CA_KEY, certs_dir / CA_CERT
    if not force and (key_path.exists() or cert_path.exists()):
        raise CertError(
            f"a CA already exists in {certs_dir}: keep using it, or run `dicomflow certs init --force` to replace it "
            "(then re-issue every certificate and redistribute ca.pem)"
        )
    _ensure_dir(certs_dir)
    key = _new_key()
    cert = _ca_certificate(key, common_name, days)
    _write_key(key_path, key)
    _write_cert(cert_path, cert)
    return cert_path


def issue(
    certs_dir: Path,
    name: str,
    kind: Kind,
    hosts: Sequence[str] = DEFAULT_HOSTS,
    days: int = 825,
) -> tuple[Path, Path]:
    """Issue (or re-issue, replacing) NAME.pem and NAME.key signed by the CA; returns (cert, key).
    825 days is the longest lifetime Apple platforms accept for a TLS server certificate."""
    _check_name(name)
    if kind not in _EKU:
        raise CertError(f"kind must be 'server' or 'client', got {kind!r}")
    if kind == "server" and not hosts:
        raise CertError("a server certificate needs at least one host name or IP address its clients connect to")
    ca_key, ca_cert = _load_ca(certs_dir)
    _ensure_dir(certs_dir)
    key = _new_key()
    cert = _leaf_certificate(ca_key, ca_cert, key, name, kind, hosts, days)
    cert_path, key_path = certs_dir / f"{name}.pem", certs_dir / f"{name}.key"
    _write_key(key_path, key)
    _write_cert(cert_path, cert)
    return cert_path, key_path


# --- CLI hook -------------------------------------------------------------------------------------


def add_certs_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Lets cluster.cli wire `dicomflow certs ...` with one call, keeping the options next to the code."""
    certs = subparsers.add_parser("certs", help="local certificate authority for DICOM TLS and HTTPS")
    actions = certs.add_subparsers(dest="certs_command", required=True)
    init = actions.add_parser("init", help="create the CA under {var_dir}/certs")
    init.add_argument("--common-name", default="dicomflow local CA")
    init.add_argument("--days", type=int, default=3650)
    init.add_argument("--force", action="store_true", help="replace an existing CA (invalidates issued certificates)")
    issue_cmd = actions.add_parser("issue", help="issue NAME.pem/NAME.key signed by the CA")
    issue_cmd.add_argument("name")
    issue_cmd.add_argument("--kind", choices=sorted(_EKU), default="server")
    issue_cmd.add_argument(
        "--host", dest="hosts", action="append", help="DNS name or IP address (repeatable); default 127.0.0.1 and localhost"
    )
    issue_cmd.add_argument("--days", type=int, default=825)


def run_certs_command(args: argparse.Namespace, var_dir: Path) -> int:
    """Runs a parsed `certs` command; returns the exit status and prints errors, never a traceback."""
    certs_dir = certs_dir_for(var_dir)
    try:
        if args.certs_command == "init":
            path = init_ca(certs_dir, args.common_name, args.days, args.force)
            print(f"dicomflow: CA certificate {path} (give this file to peers that must trust the archive)")
        else:
            cert, key = issue(certs_dir, args.name, args.kind, args.hosts or DEFAULT_HOSTS, args.days)
            print(f"dicomflow: certificate {cert}, key {key}")
    except CertError as err:
        print(f"dicomflow: {err}", file=sys.stderr)
        return 1
    return 0
