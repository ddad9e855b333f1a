"""The issuers' signing keys, cached in Redis for every replica (integrity-protected), kept fresh
within `refetch_seconds`, refetched on an unknown key id at most once per `refetch_seconds` per
issuer (so a flood of bogus kids cannot hammer the IdP)."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import math
import time
import urllib.request
from collections.abc import Awaitable, Callable
from typing import Any

from redis.asyncio import Redis

log = logging.getLogger("dicomflow.identity")

MAX_DOCUMENT_BYTES = 1024 * 1024
FETCH_TIMEOUT = 5.0
LOCAL_SECONDS = 30.0  # a replica re-reads Redis this often, so a rotation elsewhere reaches it

Jwks = dict[str, Any]
Fetcher = Callable[[str], Awaitable[Jwks]]


class KeysUnavailable(RuntimeError):
    """The issuer's keys could not be had (issuer down, bad document)."""


def _get_json(url: str) -> Any:
    if not url.startswith(("https://", "http://")):
        raise KeysUnavailable(f"{url!r} is not an http(s) URL")
    request = urllib.request.Request(url, headers={"Accept": "application/json"})  # noqa: S310 - scheme checked above
    with urllib.request.urlopen(request, timeout=FETCH_TIMEOUT) as response:  # noqa: S310
        body = response.read(MAX_DOCUMENT_BYTES + 1)
    if len(body) > MAX_DOCUMENT_BYTES:
        raise KeysUnavailable(f"{url} answered more than {MAX_DOCUMENT_BYTES} bytes")
    return json.loads(body)


def _discover_jwks(issuer: str) -> Jwks:
    config = _get_json(issuer.rstrip("/") + "/.well-known/openid-configuration")
    if not isinstance(config, dict) or config.get("issuer", "").rstrip("/") != issuer.rstrip("/"):
        raise KeysUnavailable(f"the OpenID configuration at {issuer} names another issuer")
    jwks = _get_json(str(config["jwks_uri"]))
    if not isinstance(jwks, dict) or not isinstance(jwks.get("keys"), list):
        raise KeysUnavailable(f"{config['jwks_uri']} is not a JWK set")
    return jwks


async def fetch_from_issuer(issuer: str) -> Jwks:
    """Discovery document -> jwks_uri -> key set (stdlib HTTP, off the event loop)."""
    try:
        return await asyncio.to_thread(_discover_jwks, issuer)
    except KeysUnavailable:
        raise
    except Exception as err:  # noqa: BLE001 - any network or parse failure means "no keys now"
        raise KeysUnavailable(f"cannot fetch the signing keys of {issuer}: {type(err).__name__}: {err}") from None


class JwksCache:
    """Key sets are shared through Redis but never trusted from it blindly: each entry carries an
    HMAC under a key only the archive's processes hold (var/secrets), so whoever can write Redis
    cannot plant keys and forge tokens; an entry failing the check is ignored and the issuer asked.

    Freshness: an entry older than `refetch_seconds / 2` is fetched again when a token needs it,
    and a process keeps its own copy no longer than that either, so a key the issuer withdraws stops
    verifying within `refetch_seconds`. While the issuer cannot be reached, the last good set serves
    for up to `ttl_seconds`."""

    def __init__(
        self, redis: Redis, ttl_seconds: int, refetch_seconds: float, *, mac_key: bytes, fetch: Fetcher = fetch_from_issuer
    ) -> None:
        if len(mac_key) < 16:
            raise ValueError("the JWKS cache key must hold at least 16 bytes")
        self.redis = redis
        self.ttl_seconds = ttl_seconds
        self.refetch_seconds = refetch_seconds
        self.fresh_seconds = refetch_seconds / 2
        self.mac_key = mac_key
        self.fetch = fetch
        self._local: dict[str, tuple[float, Jwks]] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    @staticmethod
    def _key(kind: str, issuer: str) -> str:
        return f"dicomflow-auth:{kind}:{hashlib.sha256(issuer.encode()).hexdigest()[:32]}"

    async def keys(self, issuer: str, *, skip_local: bool = False) -> Jwks:
        """The key set: this process's copy, else Redis's if genuine and fresh, else the issuer's."""
        local = self._local.get(issuer)
        if not skip_local and local and time.monotonic() - local[0] < min(LOCAL_SECONDS, self.fresh_seconds):
            return local[1]
        lock = self._locks.setdefault(issuer, asyncio.Lock())
        async with lock:  # a cold start fetches once, not once per waiting request
            entry = await self._read(issuer)
            if entry is not None and time.time() - entry[0] < self.fresh_seconds:
                return self._remember(issuer, entry[1])
            try:
                return await self._refresh(issuer)
            except KeysUnavailable:
                if entry is not None and time.time() - entry[0] < self.ttl_seconds:
                    log.warning(
                        "the keys of %s could not be refreshed; using the set fetched %.0f s ago", issuer, time.time() - entry[0]
                    )
                    return self._remember(issuer, entry[1])
                raise

    async def refetch_if_allowed(self, issuer: str) -> Jwks | None:
        """A token named a key we do not have: ask the issuer again, unless someone did so lately."""
        allowed = await self.redis.set(self._key("refetch", issuer), b"1", nx=True, ex=max(1, math.ceil(self.refetch_seconds)))
        if not allowed:
            return None
        return await self._refresh(issuer)

    def _mac(self, body: bytes) -> str:
        return hmac.new(self.mac_key, body, hashlib.sha256).hexdigest()

    async def _read(self, issuer: str) -> tuple[float, Jwks] | None:
        """(fetched_at, key set) from Redis, or None when absent or not written by this archive."""
        raw = await self.redis.get(self._key("jwks", issuer))
        if raw is None:
            return None
        try:
            entry = json.loads(raw)
            body = str(entry["body"]).encode()
            if not hmac.compare_digest(self._mac(body), str(entry["mac"])):
                raise ValueError("bad MAC")
            content = json.loads(body)
            return float(content["fetched_at"]), content["jwks"]
        except (ValueError, KeyError, TypeError):
            log.warning("the cached keys of %s in Redis fail their integrity check: ignored, asking the issuer", issuer)
            return None

    async def _refresh(self, issuer: str) -> Jwks:
        jwks = await self.fetch(issuer)
        body = json.dumps({"fetched_at": time.time(), "jwks": jwks}, sort_keys=True)
        entry = json.dumps({"body": body, "mac": self._mac(body.encode())})
        await self.redis.set(self._key("jwks", issuer), entry.encode(), ex=self.ttl_seconds)
        return self._remember(issuer, jwks)

    def _remember(self, issuer: str, jwks: Jwks) -> Jwks:
        self._local[issuer] = (time.monotonic(), jwks)
        return jwks
