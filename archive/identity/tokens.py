"""Bearer tokens (OIDC access tokens, JWTs) verified with PyJWT against the issuers' published
keys: signature, `exp`, `nbf`, `iss`, `aud`, with a small clock skew. The token's claims name the
caller's tenants and roles."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import jwt

from archive.identity.jwks import Jwks, JwksCache, KeysUnavailable
from archive.identity.principal import Principal, Role
from archive.identity.tenants import BadTenant, check_tenant
from archive.identity.verified_tokens import VerifiedTokens

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from archive.config.settings import Settings

MAX_TOKEN_BYTES = 16 * 1024


class InvalidToken(ValueError):
    """Answered with 401 (DICOMweb) or a refused user identity (DIMSE); the message says why."""


def claim(claims: dict[str, Any], path: str) -> Any:
    """A claim by dotted path: `realm_access.roles` reaches Keycloak's nested realm roles."""
    value: Any = claims
    for part in path.split("."):
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    return value


def _names(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [v for v in value.replace(",", " ").split() if v]
    if isinstance(value, list):
        return [v for v in value if isinstance(v, str)]
    return []


def _roles(names: Iterable[str]) -> frozenset[Role]:
    known = {r.value: r for r in Role}
    return frozenset(known[n] for n in names if n in known)


def _tenants(names: Iterable[str]) -> frozenset[str]:
    good = set()
    for name in names:
        try:
            good.add(check_tenant(name))
        except BadTenant:
            continue  # a tenant we could never serve grants nothing
    return frozenset(good)


class TokenVerifier:
    def __init__(
        self,
        issuers: list[str],
        audience: str,
        keys: JwksCache,
        *,
        algorithms: list[str],
        tenant_claim: str = "dicomflow_tenants",
        role_claim: str = "dicomflow_roles",
        leeway: int = 30,
    ) -> None:
        self.issuers = {i.rstrip("/"): i for i in issuers}
        self.audience = audience
        self.keys = keys
        self.algorithms = algorithms
        self.tenant_claim = tenant_claim
        self.role_claim = role_claim
        self.leeway = leeway
        # a withdrawn key's tokens must stop within refetch_seconds, cached verifications included
        self.verified = VerifiedTokens(max_age=min(60.0, keys.refetch_seconds))

    async def verify(self, token: str) -> Principal:
        known = self.verified.get(token)
        if known is not None:
            return known
        claims = await self.claims(token)
        subject = str(claims.get("sub") or claims.get("client_id") or "?")[:128]
        principal = Principal(
            subject,
            _tenants(_names(claim(claims, self.tenant_claim))),
            _roles(_names(claim(claims, self.role_claim))),
            method="oidc",
        )
        self.verified.put(token, principal, float(claims["exp"]))
        return principal

    async def claims(self, token: str) -> dict[str, Any]:
        if len(token) > MAX_TOKEN_BYTES:
            raise InvalidToken("the token is too long")
        try:
            header = jwt.get_unverified_header(token)
            unverified = jwt.decode(token, options={"verify_signature": False})
        except jwt.PyJWTError as err:
            raise InvalidToken(f"not a JWT: {err}") from None
        issuer = self.issuers.get(str(unverified.get("iss", "")).rstrip("/"))
        if issuer is None:
            raise InvalidToken("the token's issuer is not trusted here")
        if header.get("alg") not in self.algorithms:
            raise InvalidToken(f"the token's algorithm {header.get('alg')!r} is not accepted")
        key = await self._key(issuer, header.get("kid"), header["alg"])
        try:
            return jwt.decode(
                token,
                key=key,
                algorithms=[header["alg"]],
                audience=self.audience,
                issuer=issuer,
                leeway=self.leeway,
                options={"require": ["exp", "iss", "aud", "sub"]},
            )
        except jwt.ExpiredSignatureError:
            raise InvalidToken("the token has expired") from None
        except jwt.ImmatureSignatureError:
            raise InvalidToken("the token is not valid yet") from None
        except jwt.PyJWTError as err:
            raise InvalidToken(f"the token is not valid: {err}") from None

    async def _key(self, issuer: str, kid: str | None, alg: str) -> Any:
        try:
            found = _match(await self.keys.keys(issuer), kid, alg)
            if found is None:  # another replica may have the rotated keys already, else ask the issuer
                found = _match(await self.keys.keys(issuer, skip_local=True), kid, alg)
            if found is None:
                fresh = await self.keys.refetch_if_allowed(issuer)
                found = _match(fresh, kid, alg) if fresh else None
        except KeysUnavailable as err:
            raise InvalidToken(f"the issuer's keys are unavailable: {err}") from None
        if found is None:
            raise InvalidToken("the token is signed with a key the issuer does not publish")
        return found


def _match(jwks: Jwks, kid: str | None, alg: str) -> Any:
    for jwk in jwks.get("keys", []):
        if not isinstance(jwk, dict) or jwk.get("use", "sig") != "sig":
            continue
        if (kid is None or jwk.get("kid") == kid) and jwk.get("alg", alg) == alg:
            try:
                return jwt.PyJWK(jwk, algorithm=alg).key
            except jwt.PyJWTError:
                continue
    return None


def verifier_for(settings: "Settings", redis: "Redis") -> TokenVerifier | None:
    """The token verifier the settings describe, keys cached in this Redis; None while auth is off."""
    if settings.auth != "oidc":
        return None
    mac_key = settings.effective_oidc_cache_key()
    if not mac_key:
        raise RuntimeError(
            "the key that protects cached OIDC keys is missing (var/secrets/oidc_cache_key): "
            "start the archive with `dicomflow up`, or set oidc_cache_key"
        )
    keys = JwksCache(redis, settings.oidc.jwks_ttl_seconds, settings.oidc.refetch_seconds, mac_key=mac_key.encode())
    return TokenVerifier(
        settings.oidc.issuer,
        settings.oidc.audience or "",
        keys,
        algorithms=list(settings.oidc.algorithms),
        tenant_claim=settings.oidc.tenant_claim,
        role_claim=settings.oidc.role_claim,
        leeway=settings.oidc.clock_skew_seconds,
    )
