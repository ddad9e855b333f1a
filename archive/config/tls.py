"""TLS contexts for DICOM TLS (PS3.15 Annex B, BCP 195) and HTTPS: the stdlib `ssl` only, so the
SCP and the CLI's certificate tools share one definition of what the archive accepts."""

from __future__ import annotations

import ssl
from pathlib import Path


class CertError(RuntimeError):
    """A certificate, key or CA file is missing or unusable; the message says what to do next."""


def _tls12_context(protocol: int) -> ssl.SSLContext:
    """TLS 1.2 is the floor DICOM's BCP 195 profile and current HTTPS practice both require."""
    context = ssl.SSLContext(protocol)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


def _load_chain(context: ssl.SSLContext, cert: Path, key: Path) -> None:
    try:
        context.load_cert_chain(certfile=cert, keyfile=key)
    except FileNotFoundError as err:
        raise CertError(f"{err.filename} is missing: run `dicomflow certs issue NAME` to create it") from err
    except ssl.SSLError as err:
        raise CertError(f"{cert} and {key} do not form a usable pair ({err.reason}): re-issue them") from err


def _load_ca_file(context: ssl.SSLContext, ca: Path) -> None:
    try:
        context.load_verify_locations(cafile=ca)
    except FileNotFoundError as err:
        raise CertError(f"CA certificate {ca} is missing: run `dicomflow certs init` or copy the archive's ca.pem here") from err
    except ssl.SSLError as err:
        raise CertError(f"{ca} is not a PEM CA certificate ({err.reason})") from err


def ssl_server_context(cert: Path, key: Path, ca: Path | None, require_client_cert: bool) -> ssl.SSLContext:
    """With `ca` the server asks for a client certificate and, if one is offered, it must chain to `ca`;
    `require_client_cert` turns that into mutual TLS where a client without one is refused."""
    context = _tls12_context(ssl.PROTOCOL_TLS_SERVER)
    _load_chain(context, cert, key)
    if require_client_cert and ca is None:
        raise CertError("require_client_cert needs the CA that signs client certificates: pass ca=certs/ca.pem")
    if ca is not None:
        _load_ca_file(context, ca)
        context.verify_mode = ssl.CERT_REQUIRED if require_client_cert else ssl.CERT_OPTIONAL
    return context


def ssl_client_context(ca: Path, cert: Path | None = None, key: Path | None = None) -> ssl.SSLContext:
    """Trusts only `ca` (not the system store) and checks the server's host name against its SAN;
    `cert`/`key` present a client certificate for servers that require one."""
    if (cert is None) != (key is None):
        raise CertError("a client certificate needs both cert and key (NAME.pem and NAME.key)")
    context = _tls12_context(ssl.PROTOCOL_TLS_CLIENT)
    _load_ca_file(context, ca)
    if cert is not None and key is not None:
        _load_chain(context, cert, key)
    return context
