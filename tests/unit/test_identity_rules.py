"""Identity rules without a stack: tenant choice, AE admission and binding, settings that must
not start, and the HAProxy bind rewrite."""

from __future__ import annotations

import pytest

from archive.config.settings import SettingsError, load_settings
from archive.identity import ANONYMOUS, Principal, Role, TenantRefused
from archive.identity.ae_rules import PeerCertificate, Refusal, admit, certificate_matches, tenant_of
from archive.identity.tokens import claim
from rayfence.haproxy_shim import pin_binds


def _settings(**values: object):
    return load_settings(**values)


@pytest.fixture(autouse=True)
def _no_config_file(monkeypatch, tmp_path):
    monkeypatch.setenv("DICOMFLOW_CONFIG", str(tmp_path / "none.toml"))


def test_a_principal_works_only_in_its_tenants():
    alice = Principal("alice", frozenset({"a", "b"}), frozenset({Role.READER}))
    assert alice.choose_tenant("b", "default") == "b"
    with pytest.raises(TenantRefused):
        alice.choose_tenant("c", "default")
    with pytest.raises(TenantRefused) as err:
        alice.choose_tenant(None, "default")
    assert err.value.ambiguous
    assert Principal("bob", frozenset({"x"}), frozenset()).choose_tenant(None, "default") == "x"
    assert ANONYMOUS.choose_tenant("anything", "default") == "anything"


def test_admin_holds_every_tenant_role_and_others_only_theirs():
    admin = Principal("op", frozenset(), frozenset({Role.ADMIN}))
    reader = Principal("r", frozenset(), frozenset({Role.READER}))
    assert all(admin.has(role) for role in Role if role is not Role.OPERATOR)
    assert reader.has(Role.READER) and not reader.has(Role.WRITER) and not reader.has(Role.ADMIN)


def test_nested_claims_reach_keycloak_roles():
    assert claim({"realm_access": {"roles": ["reader"]}}, "realm_access.roles") == ["reader"]
    assert claim({"realm_access": "x"}, "realm_access.roles") is None


def test_unknown_ae_is_refused_when_auth_is_on_except_for_echo():
    s = _settings(auth="oidc", oidc_issuer="https://idp.example/realms/h", oidc_audience="dicomflow")
    assert isinstance(admit(s, "STRANGER", "10.0.0.5"), Refusal)
    echo_only = admit(s, "STRANGER", "10.0.0.5", verification_only=True)
    assert not isinstance(echo_only, Refusal) and not echo_only.may("store")
    assert not isinstance(admit(_settings(), "STRANGER", "10.0.0.5"), Refusal)  # auth off: accepted


def test_an_unknown_ae_admitted_by_the_setting_may_only_store_and_commit():
    """Anyone can claim an unknown title: it gets what a modality does, never query or retrieve."""
    for s in (_settings(), _settings(dimse_accept_unknown_ae=True)):
        caller = admit(s, "STRANGER", "10.0.0.5")
        assert not isinstance(caller, Refusal)
        assert {svc for svc in ("store", "commit", "find", "move", "get", "worklist", "mpps") if caller.may(svc)} == {
            "store",
            "commit",
        }


CERT = PeerCertificate.from_der(b"a certificate's DER bytes", "modality")


@pytest.mark.parametrize(
    ("expected", "matches"),
    [
        ("modality", True),
        ("other", False),
        (CERT.sha256, True),
        (CERT.sha256.upper(), True),
        ("sha256:" + ":".join(CERT.sha256[i : i + 2] for i in range(0, 64, 2)), True),
        ("0" * 64, False),
    ],
)
def test_a_certificate_is_named_by_its_cn_or_its_sha256_fingerprint(expected: str, matches: bool):
    assert certificate_matches(expected, CERT) is matches
    assert certificate_matches(expected, None) is False


def test_an_ae_that_names_a_certificate_must_present_it():
    s = _settings(ae_table={"CT1": {"tls_certificate": "modality"}, "CT2": {}})
    assert not isinstance(admit(s, "CT1", "10.0.0.5", certificate=CERT), Refusal)
    for certificate in (None, PeerCertificate.from_der(b"another", "modality2")):
        refused = admit(s, "CT1", "10.0.0.5", certificate=certificate)
        assert isinstance(refused, Refusal) and refused.diagnostic == 3 and "'modality'" in refused.reason
    assert not isinstance(admit(s, "CT2", "10.0.0.5"), Refusal)  # an entry naming none is not checked


def test_ae_hosts_services_and_tenant_binding():
    s = _settings(
        auth="oidc",
        oidc_issuer="https://idp.example",
        oidc_audience="d",
        ae_table={
            "CT1": {"tenant": "radiology", "allowed_hosts": ["10.1.0.0/16"]},
            "ALIAS": {"tenant": "cardio"},
        },
    )
    assert isinstance(admit(s, "CT1", "10.2.0.1"), Refusal)
    caller = admit(s, "CT1", "10.1.2.3")
    assert not isinstance(caller, Refusal)
    assert caller.may("store") and caller.may("commit") and not caller.may("find")
    assert tenant_of(s, caller, "DICOMFLOW") == "radiology"
    with pytest.raises(TenantRefused):  # a called AE title cannot move a modality into another tenant
        tenant_of(s, caller, "ALIAS")


def test_oidc_needs_issuer_and_audience():
    with pytest.raises(SettingsError, match="oidc_issuer"):
        _settings(auth="oidc")


def test_auth_none_only_on_loopback():
    assert _settings().exposure_problem() is None
    problem = _settings(bind_host="0.0.0.0").exposure_problem()
    assert problem and "DICOMFLOW_AUTH" in problem
    assert _settings(bind_host="0.0.0.0", auth="oidc", oidc_issuer="https://i", oidc_audience="a").exposure_problem() is None


def test_cors_defaults_follow_auth():
    assert _settings().effective_cors_origins == ["*"]
    assert _settings(auth="oidc", oidc_issuer="https://i", oidc_audience="a").effective_cors_origins == []


def test_haproxy_wildcard_binds_are_pinned_to_bind_host():
    config = "listen stats\n  bind *:8404\nfrontend m\n  bind :9101\nfrontend http\n  bind 127.0.0.1:8000\n"
    pinned = pin_binds(config, "127.0.0.1")
    assert "bind 127.0.0.1:8404" in pinned and "bind 127.0.0.1:9101" in pinned and "bind 127.0.0.1:8000" in pinned
    assert "*:" not in pinned and "bind :" not in pinned


def test_verified_tokens_expire_with_the_token_or_after_max_age_and_stay_bounded() -> None:
    from archive.identity.verified_tokens import VerifiedTokens

    alice = Principal("alice", frozenset({"a"}), frozenset({Role.READER}))
    cache = VerifiedTokens(max_entries=2, max_age=60)
    cache.put("token-1", alice, expires_at=1030, now=1000)
    assert cache.get("token-1", now=1029) is alice
    assert cache.get("token-1", now=1030) is None, "gone when the token expires"
    cache.put("token-2", alice, expires_at=5000, now=1000)
    assert cache.get("token-2", now=1059) is alice and cache.get("token-2", now=1060) is None, "re-verified after max_age"
    cache.put("expired", alice, expires_at=999, now=1000)
    assert cache.get("expired", now=1000) is None
    for name in ("a", "b", "c"):
        cache.put(name, alice, expires_at=5000, now=1000)
    assert cache.get("a", now=1001) is None and cache.get("c", now=1001) is alice, "least recently used goes first"
    assert all(isinstance(key, bytes) and len(key) == 32 for key in cache._entries), "digests, never the bearer token"


def test_admin_is_scoped_to_its_tenants_and_operator_sees_all() -> None:
    admin = Principal("a", frozenset({"hospa"}), frozenset({Role.ADMIN}))
    operator = Principal("o", frozenset(), frozenset({Role.OPERATOR}))
    assert admin.has(Role.READER) and admin.has(Role.DELETER) and not admin.has(Role.OPERATOR)
    assert admin.visible_tenants() == {"hospa"}
    assert operator.has(Role.OPERATOR) and operator.visible_tenants() is None
    assert not operator.may_use("hospa"), "the operator role gives views, not a tenant's images"
    assert ANONYMOUS.visible_tenants() is None  # auth off: one loopback-only archive, one operator
