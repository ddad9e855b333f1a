"""Tokens this process verified recently, so a viewer's hundredth request with the same token costs
a dictionary lookup instead of a signature check (~0.5 ms of CPU, bench/auth_latency.py).

An entry lives until the token expires, and never longer than `max_age` seconds: a key the issuer
withdraws stops admitting its tokens within that time, as it would once the JWKS cache refreshed.
Keys are SHA-256 digests, so the process keeps no bearer token it could leak.
"""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict

from archive.identity.principal import Principal


class VerifiedTokens:
    def __init__(self, max_entries: int = 1024, max_age: float = 60.0) -> None:
        self.max_entries = max_entries
        self.max_age = max_age
        self._entries: OrderedDict[bytes, tuple[Principal, float]] = OrderedDict()

    @staticmethod
    def _key(token: str) -> bytes:
        return hashlib.sha256(token.encode()).digest()

    def get(self, token: str, now: float | None = None) -> Principal | None:
        key = self._key(token)
        entry = self._entries.get(key)
        if entry is None:
            return None
        principal, until = entry
        if (now if now is not None else time.time()) >= until:
            del self._entries[key]
            return None
        self._entries.move_to_end(key)
        return principal

    def put(self, token: str, principal: Principal, expires_at: float, now: float | None = None) -> None:
        now = now if now is not None else time.time()
        until = min(expires_at, now + self.max_age)
        if until <= now:
            return
        key = self._key(token)
        self._entries[key] = (principal, until)
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)
