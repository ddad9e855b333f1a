"""A real OpenID Connect token issuer on loopback, for tests that exercise the archive's token checks
end to end: the archive discovers this issuer's keys over HTTP and verifies real signatures, so no part
of the verification path is mocked. It mimics Keycloak's URL layout (a realm under `/realms/<name>`)
because that is the issuer operators most often point the archive at.

Besides good tokens it mints deliberately bad ones (expired, not yet valid, wrong audience, wrong issuer,
unknown kid, signed by a key it does not publish), rotates keys, and counts how often the discovery
document and the key set are fetched, so tests can assert that the archive caches keys and refetches
them only when it must."""

from __future__ import annotations

import json
import secrets
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Literal, Self
from urllib.parse import parse_qsl, urlsplit

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

Alg = Literal["RS256", "ES256"]
REALM = "dicomflow"
DISCOVERY_PATH = "/.well-known/openid-configuration"
JWKS_PATH = "/protocol/openid-connect/certs"


@dataclass(frozen=True)
class SigningKey:
    """One key pair: the private half signs tokens here, the public half is what the JWKS publishes."""

    kid: str
    alg: Alg
    private_key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey = field(repr=False)

    @classmethod
    def generate(cls, alg: Alg = "RS256", kid: str | None = None) -> SigningKey:
        """A fresh key; not published anywhere until an issuer adds it, so it also serves as a 'foreign' key."""
        private_key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
        if alg == "RS256":
            private_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        elif alg == "ES256":
            private_key = ec.generate_private_key(ec.SECP256R1())
        else:
            raise ValueError(f"unsupported algorithm {alg!r}")
        return cls(kid=kid or f"{alg.lower()}-{secrets.token_hex(8)}", alg=alg, private_key=private_key)

    def public_jwk(self) -> dict[str, Any]:
        """The public key as a JWK (RFC 7517), with the members verifiers select keys by: kid, alg, use."""
        public = self.private_key.public_key()
        if isinstance(public, rsa.RSAPublicKey):
            jwk = RSAAlgorithm.to_jwk(public, as_dict=True)
        else:
            jwk = ECAlgorithm.to_jwk(public, as_dict=True)
        if not isinstance(jwk, dict):
            raise TypeError("PyJWT returned a JWK string despite as_dict=True")
        return {**jwk, "kid": self.kid, "alg": self.alg, "use": "sig"}


class _Server(ThreadingHTTPServer):
    """Carries the issuer to the handler; daemon threads so a hung client never blocks teardown."""

    daemon_threads = True
    issuer_app: OidcIssuer


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_GET(self) -> None:
        self._reply(*self.server.issuer_app.route(urlsplit(self.path).path))

    def do_POST(self) -> None:
        """The token endpoint: OAuth2 client credentials (RFC 6749 4.4), form-encoded."""
        length = min(int(self.headers.get("Content-Length") or 0), 65536)
        form = dict(parse_qsl(self.rfile.read(length).decode("ascii", "replace")))
        self._reply(*self.server.issuer_app.token_request(urlsplit(self.path).path, form))

    def _reply(self, status: int, body: Any) -> None:
        payload = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - signature of the base class
        """Silent: the test output should show failures, not one access-log line per key fetch."""


class OidcIssuer:
    """An OIDC issuer serving discovery and JWKS on 127.0.0.1 (a free port) from a daemon thread.

    Starts with one RS256 and one ES256 key. Use as a context manager, or call start()/stop()."""

    def __init__(self, realm: str = REALM) -> None:
        self._realm = realm
        self._lock = threading.Lock()
        self._keys: list[SigningKey] = [SigningKey.generate("RS256"), SigningKey.generate("ES256")]
        self._current: dict[str, SigningKey] = {k.alg: k for k in self._keys}
        self._hits = {"discovery": 0, "jwks": 0, "other": 0}
        self._clients: dict[str, tuple[str, tuple[str, ...], tuple[str, ...], str]] = {}
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # lifecycle

    def start(self) -> Self:
        """Bind port 0 (the kernel picks a free one, so parallel test runs never collide) and serve."""
        if self._server is not None:
            return self
        server = _Server(("127.0.0.1", 0), _Handler)
        server.issuer_app = self
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.1}, name=f"oidc-issuer-{self.port}", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and free the port; idempotent, so teardown code need not track state."""
        server, thread = self._server, self._thread
        self._server, self._thread = None, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        if thread is not None:
            thread.join(timeout=5)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()

    # addresses

    @property
    def port(self) -> int:
        """The bound port; only meaningful while running."""
        if self._server is None:
            raise RuntimeError("the issuer is not running")
        return int(self._server.server_address[1])

    @property
    def base_url(self) -> str:
        """The server root, outside the realm: for requests that should miss both documents."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def issuer(self) -> str:
        """The `iss` of its tokens, and what the archive is configured to trust (Keycloak-style realm URL)."""
        return f"{self.base_url}/realms/{self._realm}"

    @property
    def discovery_url(self) -> str:
        return self.issuer + DISCOVERY_PATH

    @property
    def jwks_uri(self) -> str:
        return self.issuer + JWKS_PATH

    # documents

    def discovery(self) -> dict[str, Any]:
        """The OpenID Provider metadata (the subset a resource server reads)."""
        return {
            "issuer": self.issuer,
            "jwks_uri": self.jwks_uri,
            "token_endpoint": self.issuer + "/protocol/openid-connect/token",
            "authorization_endpoint": self.issuer + "/protocol/openid-connect/auth",
            "response_types_supported": ["code"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["RS256", "ES256"],
        }

    def jwks(self) -> dict[str, Any]:
        """The published key set: public halves only, the same document GET jwks_uri returns."""
        with self._lock:
            return {"keys": [k.public_jwk() for k in self._keys]}

    @property
    def keys(self) -> list[SigningKey]:
        """The published keys, oldest first (a copy)."""
        with self._lock:
            return list(self._keys)

    def current_key(self, alg: Alg = "RS256") -> SigningKey:
        """The key new tokens of this algorithm are signed with (the newest after rotate())."""
        with self._lock:
            return self._current[alg]

    def route(self, path: str) -> tuple[int, Any]:
        """Route one GET; counted before answering, so a test sees the hit as soon as the client has its reply."""
        prefix = f"/realms/{self._realm}"
        if path == prefix + DISCOVERY_PATH:
            self._count("discovery")
            return 200, self.discovery()
        if path == prefix + JWKS_PATH:
            self._count("jwks")
            return 200, self.jwks()
        self._count("other")
        return 404, {"error": "not_found", "path": path}

    # clients (OAuth2 client credentials)

    def register_client(
        self, client_id: str, secret: str, *, tenants: Iterable[str], roles: Iterable[str], audience: str
    ) -> None:
        """A confidential client whose token carries these tenants and roles (a machine, not a person)."""
        with self._lock:
            self._clients[client_id] = (secret, tuple(tenants), tuple(roles), audience)

    def token_request(self, path: str, form: Mapping[str, str]) -> tuple[int, Any]:
        if path != f"/realms/{self._realm}/protocol/openid-connect/token":
            return 404, {"error": "not_found"}
        if form.get("grant_type") != "client_credentials":
            return 400, {"error": "unsupported_grant_type"}
        with self._lock:
            client = self._clients.get(form.get("client_id", ""))
        if client is None or client[0] != form.get("client_secret"):
            return 401, {"error": "invalid_client"}
        _, tenants, roles, audience = client
        token = self.token(form["client_id"], tenants=tenants, roles=roles, audience=audience, expires_in=300)
        return 200, {"access_token": token, "token_type": "Bearer", "expires_in": 300}

    @property
    def token_endpoint(self) -> str:
        return self.issuer + "/protocol/openid-connect/token"

    # counters

    def _count(self, name: str) -> None:
        with self._lock:
            self._hits[name] += 1

    @property
    def hits(self) -> dict[str, int]:
        """Requests served so far: {"discovery": n, "jwks": n, "other": n} (a snapshot)."""
        with self._lock:
            return dict(self._hits)

    @property
    def discovery_hits(self) -> int:
        return self.hits["discovery"]

    @property
    def jwks_hits(self) -> int:
        return self.hits["jwks"]

    def reset_hits(self) -> None:
        """Zero the counters, so a test can count only the fetches its own requests cause."""
        with self._lock:
            for name in self._hits:
                self._hits[name] = 0

    # keys

    def rotate(self, drop_old: bool = False, alg: Alg = "RS256") -> SigningKey:
        """Publish a new key and sign with it from now on, as an IdP's key rotation does. Old keys stay
        published (tokens already issued still verify) unless drop_old, which unpublishes the earlier
        keys of this algorithm (keys of the other algorithm are left alone)."""
        new = SigningKey.generate(alg)
        with self._lock:
            if drop_old:
                self._keys = [k for k in self._keys if k.alg != alg]
            self._keys.append(new)
            self._current[alg] = new
        return new

    def publish(self, key: SigningKey) -> SigningKey:
        """Publish one more key without signing new tokens with it (tokens ask for it with key=)."""
        with self._lock:
            self._keys.append(key)
        return key

    def withdraw(self, key: SigningKey) -> None:
        """Stop publishing this key, as an IdP does with a compromised one."""
        with self._lock:
            self._keys = [k for k in self._keys if k is not key]

    # tokens

    def token(
        self,
        subject: str = "alice",
        *,
        tenants: Iterable[str] = ("default",),
        roles: Iterable[str] = ("reader",),
        audience: str | list[str] | None = "dicomflow",
        expires_in: int | None = 300,
        not_before: int | None = None,
        alg: Alg = "RS256",
        kid: str | None = None,
        extra_claims: Mapping[str, Any] | None = None,
        issuer: str | None = None,
        key: SigningKey | None = None,
    ) -> str:
        """A signed JWT access token carrying the archive's tenant and role claims (options keyword-only,
        so a call reads as the scenario it builds).

        - expires_in: seconds from now to `exp` (negative: already expired; None: no `exp` at all).
        - not_before: seconds from now to `nbf` (positive: not yet valid); omitted when None.
        - audience / issuer: override `aud` / `iss` (audience None omits `aud`).
        - kid: a published kid signs with that key; an unpublished kid signs with the current key
          for `alg` but names the unknown kid in the header.
        - key: sign with this key (e.g. SigningKey.generate(), which no JWKS publishes); `alg` and the
          header kid then come from the key unless kid is given.
        - extra_claims: merged last, so they can override or remove (value None) any standard claim."""
        signer = key or self._signer(alg, kid)
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": issuer if issuer is not None else self.issuer,
            "sub": subject,
            "aud": audience,
            "iat": now,
            "exp": None if expires_in is None else now + expires_in,
            "nbf": None if not_before is None else now + not_before,
            "dicomflow_tenants": list(tenants),
            "dicomflow_roles": list(roles),
        }
        claims.update(extra_claims or {})
        claims = {name: value for name, value in claims.items() if value is not None}
        return jwt.encode(claims, signer.private_key, algorithm=signer.alg, headers={"kid": kid or signer.kid, "typ": "JWT"})

    def foreign_token(self, alg: Alg = "RS256", **kwargs: Any) -> str:
        """A token that looks right but is signed by a key this issuer never published (a forgery)."""
        return self.token(alg=alg, key=SigningKey.generate(alg, kid=f"foreign-{secrets.token_hex(8)}"), **kwargs)

    def unknown_kid_token(self, alg: Alg = "RS256", **kwargs: Any) -> str:
        """A token whose header names a kid the JWKS does not contain (signed by the current key)."""
        return self.token(alg=alg, kid=f"unknown-{secrets.token_hex(8)}", **kwargs)

    def _signer(self, alg: Alg, kid: str | None) -> SigningKey:
        with self._lock:
            if kid is not None:
                for published in self._keys:
                    if published.kid == kid:
                        return published
            if alg not in self._current:
                raise ValueError(f"no {alg} key: supported are {sorted(self._current)}")
            return self._current[alg]
