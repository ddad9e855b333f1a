"""The loopback OIDC issuer must behave like a real one, since the archive's token tests trust it:
discovery leads to the JWKS, its tokens verify with PyJWT against the published keys, and its bad
tokens fail for the intended reason."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import jwt
import pytest

from testkit.oidc_issuer import OidcIssuer, SigningKey


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 - loopback test server
        return json.load(response)


def verify(token: str, jwks: dict[str, Any], issuer: str, audience: str = "dicomflow") -> dict[str, Any]:
    """Verify as a resource server does: pick the key by kid from the JWKS, check signature and claims."""
    header = jwt.get_unverified_header(token)
    matches = [k for k in jwks["keys"] if k["kid"] == header["kid"]]
    if not matches:
        raise LookupError(f"kid {header['kid']!r} is not published")
    key = jwt.PyJWK(matches[0])
    claims: dict[str, Any] = jwt.decode(token, key=key, algorithms=[header["alg"]], audience=audience, issuer=issuer)
    return claims


@pytest.fixture
def issuer() -> Iterator[OidcIssuer]:
    with OidcIssuer() as running:
        yield running


def test_discovery_leads_to_keys_that_verify_tokens(issuer: OidcIssuer) -> None:
    assert issuer.issuer.startswith("http://127.0.0.1:") and issuer.issuer.endswith("/realms/dicomflow")
    config = get_json(issuer.issuer + "/.well-known/openid-configuration")
    assert config["issuer"] == issuer.issuer
    assert {"RS256", "ES256"} <= set(config["id_token_signing_alg_values_supported"])
    jwks = get_json(config["jwks_uri"])
    assert {k["alg"] for k in jwks["keys"]} == {"RS256", "ES256"}
    for k in jwks["keys"]:
        assert k["use"] == "sig" and k["kid"] and k["kty"] in {"RSA", "EC"}
        assert not {"d", "p", "q", "dp", "dq", "qi"} & set(k), "a private member is published"
    assert issuer.hits == {"discovery": 1, "jwks": 1, "other": 0}

    for alg in ("RS256", "ES256"):
        claims = verify(issuer.token(subject="bob", tenants=("t1", "t2"), roles=("writer",), alg=alg), jwks, issuer.issuer)
        assert claims["sub"] == "bob" and claims["dicomflow_tenants"] == ["t1", "t2"] and claims["dicomflow_roles"] == ["writer"]
        assert claims["aud"] == "dicomflow" and claims["exp"] > claims["iat"]


def test_counters_are_exact_under_concurrent_requests(issuer: OidcIssuer) -> None:
    with ThreadPoolExecutor(max_workers=16) as pool:
        list(pool.map(get_json, [issuer.jwks_uri] * 40 + [issuer.discovery_url] * 10))
    assert (issuer.jwks_hits, issuer.discovery_hits) == (40, 10)
    with pytest.raises(urllib.error.HTTPError) as err:
        get_json(issuer.base_url + "/nope")
    assert err.value.code == 404
    err.value.close()  # an HTTPError holds the response's socket open
    issuer.reset_hits()
    assert issuer.hits == {"discovery": 0, "jwks": 0, "other": 0}


def test_rotation_publishes_the_new_key_and_signs_with_it(issuer: OidcIssuer) -> None:
    old_token = issuer.token()
    old_kid = issuer.current_key("RS256").kid
    new = issuer.rotate()
    jwks = get_json(issuer.jwks_uri)
    assert {old_kid, new.kid} <= {k["kid"] for k in jwks["keys"]}
    new_token = issuer.token()
    assert jwt.get_unverified_header(new_token)["kid"] == new.kid
    verify(new_token, jwks, issuer.issuer)
    verify(old_token, jwks, issuer.issuer)  # still published

    issuer.rotate(drop_old=True)
    kids = {k["kid"] for k in get_json(issuer.jwks_uri)["keys"]}
    assert old_kid not in kids and new.kid not in kids
    assert issuer.current_key("ES256").kid in kids
    with pytest.raises(LookupError):
        verify(old_token, get_json(issuer.jwks_uri), issuer.issuer)


def test_bad_tokens_fail_for_the_intended_reason(issuer: OidcIssuer) -> None:
    jwks = issuer.jwks()
    with pytest.raises(jwt.ExpiredSignatureError):
        verify(issuer.token(expires_in=-60), jwks, issuer.issuer)
    with pytest.raises(jwt.ImmatureSignatureError):
        verify(issuer.token(not_before=600), jwks, issuer.issuer)
    with pytest.raises(jwt.InvalidAudienceError):
        verify(issuer.token(audience="someone-else"), jwks, issuer.issuer)
    with pytest.raises(jwt.InvalidIssuerError):
        verify(issuer.token(issuer="http://127.0.0.1:1/realms/evil"), jwks, issuer.issuer)
    with pytest.raises(LookupError):
        verify(issuer.foreign_token(), jwks, issuer.issuer)
    with pytest.raises(LookupError):
        verify(issuer.unknown_kid_token(alg="ES256"), jwks, issuer.issuer)
    # a forgery that reuses a published kid fails on the signature itself
    forged = issuer.token(key=SigningKey.generate("RS256"), kid=issuer.current_key("RS256").kid)
    with pytest.raises(jwt.InvalidSignatureError):
        verify(forged, jwks, issuer.issuer)


def test_stop_frees_the_port_and_is_idempotent() -> None:
    running = OidcIssuer().start()
    url = running.jwks_uri
    running.stop()
    running.stop()
    with pytest.raises(urllib.error.URLError):
        get_json(url)
