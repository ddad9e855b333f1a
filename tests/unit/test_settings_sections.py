"""Issue 28 item 4: the settings are held in sections, and every flat key a settings file or a
`DICOMFLOW_*` variable has used still works. The table below is the contract: each key, a value
that differs from its default written as a person would write the variable, and where it lands.
A key renamed, dropped or routed to the wrong section fails here."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from archive.config.flat_keys import flat_keys, flat_value
from archive.config.settings import Settings, SettingsError, load_settings

CERTS = {"DICOMFLOW_TLS_CERT_FILE": "/c/a.pem", "DICOMFLOW_TLS_KEY_FILE": "/c/a.key", "DICOMFLOW_TLS_CA_FILE": "/c/ca.pem"}
PACS = '{"PACS": {"host": "10.0.0.9", "port": 104}}'
TIER_RULE = '[{"name": "old", "after_days": 365, "action": "tier"}]'

# flat key, the variable's text, the value it must give, "section.field" it must land in, other variables it needs
KEYS: list[tuple[str, str, object, str, dict[str, str]]] = [
    ("env", "staging", "staging", "env", {}),
    ("var_dir", "/srv/dicomflow", Path("/srv/dicomflow"), "var_dir", {}),
    (
        "bind_host",
        "10.1.2.3",
        "10.1.2.3",
        "bind_host",
        {"DICOMFLOW_AUTH": "oidc", "DICOMFLOW_OIDC_ISSUER": "https://i", "DICOMFLOW_OIDC_AUDIENCE": "a"},
    ),
    ("default_tenant", "radiology", "radiology", "default_tenant", {}),
    ("auth", "oidc", "oidc", "auth", {"DICOMFLOW_OIDC_ISSUER": "https://i", "DICOMFLOW_OIDC_AUDIENCE": "a"}),
    ("postgres_dsn", "postgresql://u@db/x", "postgresql://u@db/x", "index.dsn", {}),
    ("postgres_owner_dsn", "postgresql://o@db/x", "postgresql://o@db/x", "index.owner_dsn", {}),
    ("postgres_client_networks", "10.0.0.0/8", ["10.0.0.0/8"], "index.client_networks", {}),
    ("postgres_port", "25432", 25432, "index.port", {}),
    ("redis_url", "redis://cache:6379/1", "redis://cache:6379/1", "cache.url", {}),
    ("redis_port", "26379", 26379, "cache.port", {}),
    ("cache_ttl_seconds", "60", 60, "cache.ttl_seconds", {}),
    ("temporal_address", "temporal:7233", "temporal:7233", "temporal.address", {}),
    ("temporal_namespace", "pacs", "pacs", "temporal.namespace", {}),
    ("temporal_task_queue", "q2", "q2", "temporal.task_queue", {}),
    ("temporal_sqlite_sync", "full", "full", "temporal.sqlite_sync", {}),
    ("temporal_port", "17233", 17233, "temporal.port", {}),
    ("temporal_ui_port", "18233", 18233, "temporal.ui_port", {}),
    ("s3_endpoint", "s3.example:9000", "s3.example:9000", "storage.s3_endpoint", {}),
    ("s3_bucket", "images", "images", "storage.s3_bucket", {}),
    ("s3_access_key", "AK", "AK", "storage.s3_access_key", {}),
    ("s3_secret_key", "SK", "SK", "storage.s3_secret_key", {}),
    ("s3_secure", "true", True, "storage.s3_secure", {}),
    ("s3_region", "eu-west-1", "eu-west-1", "storage.s3_region", {}),
    ("cold_blob_dir", "/cold", Path("/cold"), "storage.cold_blob_dir", {}),
    ("cold_s3_endpoint", "cold.example:9000", "cold.example:9000", "storage.cold_s3_endpoint", {}),
    ("cold_s3_bucket", "frozen", "frozen", "storage.cold_s3_bucket", {}),
    ("cold_s3_access_key", "CAK", "CAK", "storage.cold_s3_access_key", {}),
    ("cold_s3_secret_key", "CSK", "CSK", "storage.cold_s3_secret_key", {}),
    ("cold_s3_secure", "1", True, "storage.cold_s3_secure", {}),
    ("cold_s3_region", "eu-north-1", "eu-north-1", "storage.cold_s3_region", {}),
    ("transcode_policy", "uncompressed", "uncompressed", "storage.transcode_policy", {}),
    ("tls_cert_file", "/c/a.pem", Path("/c/a.pem"), "tls.cert_file", {}),
    ("tls_key_file", "/c/a.key", Path("/c/a.key"), "tls.key_file", {}),
    ("tls_ca_file", "/c/ca.pem", Path("/c/ca.pem"), "tls.ca_file", {}),
    ("tls_require_client_cert", "false", False, "tls.require_client_cert", {}),
    ("ae_title", "ARCHIVE2", "ARCHIVE2", "dimse.ae_title", {}),
    ("dimse_port", "104", 104, "dimse.port", {}),
    ("dimse_tls_port", "2763", 2763, "dimse.tls_port", {}),
    ("ae_table", PACS, "10.0.0.9", "dimse.ae_table", {}),
    ("dimse_max_pdu", "65536", 65536, "dimse.max_pdu", {}),
    ("dimse_max_associations", "8", 8, "dimse.max_associations", {}),
    ("dimse_max_associations_per_peer", "3", 3, "dimse.max_associations_per_peer", {}),
    ("dimse_idle_seconds", "30", 30.0, "dimse.idle_seconds", {}),
    ("dimse_max_connections_per_peer", "5", 5, "dimse.max_connections_per_peer", {}),
    ("dimse_acse_timeout_seconds", "2.5", 2.5, "dimse.acse_timeout_seconds", {}),
    ("dimse_accept_unknown_ae", "false", False, "dimse.accept_unknown_ae", {}),
    ("commitment_timeout_seconds", "60", 60.0, "dimse.commitment_timeout_seconds", {}),
    ("commitment_unknown_grace_seconds", "3", 3.0, "dimse.commitment_unknown_grace_seconds", {}),
    ("http_port", "8080", 8080, "web.http_port", {}),
    ("https", "true", True, "web.https", CERTS),
    ("public_base_url", "https://pacs.example", "https://pacs.example", "web.public_base_url", {}),
    ("cors_allow_origins", "http://localhost:3000", ["http://localhost:3000"], "web.cors_allow_origins", {}),
    ("stow_max_bytes", "1000", 1000, "web.stow_max_bytes", {}),
    ("stow_max_parts", "10", 10, "web.stow_max_parts", {}),
    ("serve_replicas", "2", 2, "web.serve_replicas", {}),
    ("serve_max_replicas", "4", 4, "web.serve_max_replicas", {}),
    ("serve_target_ongoing_requests", "2", 2.0, "web.serve_target_ongoing_requests", {}),
    ("serve_max_ongoing_requests", "50", 50, "web.serve_max_ongoing_requests", {}),
    ("serve_ingress", "proxy", "proxy", "web.serve_ingress", {}),
    ("haproxy_stats_port", "8405", 8405, "web.haproxy_stats_port", {}),
    ("haproxy_metrics_port", "9102", 9102, "web.haproxy_metrics_port", {}),
    ("oidc_issuer", "https://idp.example", ["https://idp.example"], "oidc.issuer", {}),
    ("oidc_audience", "dicomflow-api", "dicomflow-api", "oidc.audience", {}),
    ("oidc_tenant_claim", "tenants", "tenants", "oidc.tenant_claim", {}),
    ("oidc_role_claim", "realm_access.roles", "realm_access.roles", "oidc.role_claim", {}),
    ("oidc_algorithms", "ES256", ["ES256"], "oidc.algorithms", {}),
    ("oidc_jwks_ttl_seconds", "600", 600, "oidc.jwks_ttl_seconds", {}),
    ("oidc_refetch_seconds", "5", 5.0, "oidc.refetch_seconds", {}),
    ("oidc_clock_skew_seconds", "10", 10, "oidc.clock_skew_seconds", {}),
    ("oidc_cache_key", "k" * 32, "k" * 32, "oidc.cache_key", {}),
    ("max_frame_bytes", "1048576", 1048576, "decode.max_frame_bytes", {}),
    ("max_pixel_bytes", "2097152", 2097152, "decode.max_pixel_bytes", {}),
    ("max_inflated_bytes", "4194304", 4194304, "decode.max_inflated_bytes", {}),
    ("decode_memory_bytes", str(2**30), 2**30, "decode.memory_bytes", {}),
    ("decode_timeout_seconds", "30", 30.0, "decode.timeout_seconds", {}),
    ("decode_workers", "3", 3, "decode.workers", {}),
    ("decode_threads", "8", 8, "decode.threads", {}),
    ("decode_tenant_threads", "2", 2, "decode.tenant_threads", {}),
    ("decode_queue_seconds", "1", 1.0, "decode.queue_seconds", {}),
    ("stable_seconds", "1.5", 1.5, "ingest.stable_seconds", {}),
    ("duplicate_policy", "replace", "replace", "ingest.duplicate_policy", {}),
    ("uid_policy", "strict", "strict", "ingest.uid_policy", {}),
    ("retrieve_retention_days", "1", 1.0, "ingest.retrieve_retention_days", {}),
    ("orphan_grace_seconds", "120", 120.0, "ingest.orphan_grace_seconds", {}),
    ("sweep_interval_seconds", "0", 0.0, "ingest.sweep_interval_seconds", {}),
    ("stalled_study_seconds", "30", 30.0, "ingest.stalled_study_seconds", {}),
    ("hl7_port", "2576", 2576, "hl7.port", {}),
    ("hl7_senders", '{"PAS": {"tenant": "t1", "allowed_hosts": ["10.0.0.0/8"]}}', "t1", "hl7.senders", {}),
    ("hl7_tls", "true", True, "hl7.tls", CERTS),
    ("hl7_max_message_bytes", "4096", 4096, "hl7.max_message_bytes", {}),
    ("lifecycle_rules", TIER_RULE, "old", "lifecycle.rules", {"DICOMFLOW_COLD_BLOB_DIR": "/cold"}),
    ("lifecycle_interval_seconds", "3600", 3600.0, "lifecycle.interval_seconds", {}),
    ("lifecycle_concurrency", "4", 4, "lifecycle.concurrency", {}),
    ("quota_bytes", '{"t1": 1000}', {"t1": 1000}, "lifecycle.quota_bytes", {}),
    ("rejected_retention_days", "7", 7.0, "lifecycle.rejected_retention_days", {}),
    ("rejection_expiry_interval_seconds", "600", 600.0, "lifecycle.rejection_expiry_interval_seconds", {}),
    ("forward_rules", '[{"name": "out", "to": {"ae": "PACS"}}]', "out", "routing.forward_rules", {"DICOMFLOW_AE_TABLE": PACS}),
    ("deidentify_key", "d" * 32, "d" * 32, "routing.deidentify_key", {}),
    ("migrate_concurrency", "4", 4, "migration.concurrency", {}),
    ("ray_address", "10.0.0.1:6379", "10.0.0.1:6379", "cluster.ray_address", {}),
    ("ray_dashboard_port", "8266", 8266, "cluster.ray_dashboard_port", {}),
    ("node_roles", "web,dimse", ["web", "dimse"], "cluster.node_roles", {}),
    ("scp_processes", "2", 2, "cluster.scp_processes", {}),
    ("workflow_workers", "3", 3, "cluster.workflow_workers", {}),
    ("blob_dir_shared", "true", True, "cluster.blob_dir_shared", {}),
]


def _plain(value: object) -> object:
    """A table's or list's entries reduced to what the row checks."""
    if isinstance(value, dict) and value and hasattr(next(iter(value.values())), "model_dump"):
        entry = next(iter(value.values()))
        return getattr(entry, "host", None) or getattr(entry, "tenant", None)
    if isinstance(value, list) and value and hasattr(value[0], "name"):
        return value[0].name
    return value


def _at(settings: Settings, path: str) -> object:
    found: object = settings
    for part in path.split("."):
        found = getattr(found, part)
    return found


@pytest.fixture(autouse=True)
def _no_outside_variables(monkeypatch) -> None:
    """The suite runs with DICOMFLOW_ENV=test and perhaps more; each row sets only its own."""
    import os

    for variable in [v for v in os.environ if v.upper().startswith("DICOMFLOW_")]:
        monkeypatch.delenv(variable)


def test_the_table_lists_every_key() -> None:
    assert [row[0] for row in KEYS] == list(flat_keys(Settings))


@pytest.mark.parametrize("key, text, expected, path, needs", KEYS, ids=[row[0] for row in KEYS])
def test_every_variable_reaches_its_section(monkeypatch, tmp_path, key, text, expected, path, needs) -> None:
    monkeypatch.setenv("DICOMFLOW_CONFIG", str(tmp_path / "none.toml"))
    default = flat_value(Settings(), key)
    assert _plain(default) != expected, f"{key}: the row's value is the default, so it would prove nothing"
    for variable, value in {**needs, f"DICOMFLOW_{key.upper()}": text}.items():
        monkeypatch.setenv(variable, value)
    loaded = load_settings()
    assert _plain(_at(loaded, path)) == expected
    assert _plain(flat_value(loaded, key)) == expected


@pytest.mark.parametrize("key, text, expected, path, needs", KEYS, ids=[row[0] for row in KEYS])
def test_every_key_works_in_a_settings_file(monkeypatch, tmp_path, key, text, expected, path, needs) -> None:
    """The same value as a flat key of the TOML file (what every settings file written so far uses)."""
    config = tmp_path / "site.toml"
    lines = [f"{k.removeprefix('DICOMFLOW_').lower()} = {_toml(v)}" for k, v in needs.items()]
    value = _inline(expected) if isinstance(expected, list) else _toml(text)  # a list is a list in TOML
    config.write_text("\n".join([*lines, f"{key} = {value}"]) + "\n")
    monkeypatch.setenv("DICOMFLOW_CONFIG", str(config))
    assert _plain(_at(load_settings(), path)) == expected


def _toml(text: str) -> str:
    """A variable's text as a TOML value: JSON tables and lists written inline, the rest a string
    (pydantic converts "104" to 104 the same way it converts the variable)."""
    if text.startswith(("{", "[")):
        return _inline(json.loads(text))
    return json.dumps(text)


def _inline(value: object) -> str:
    if isinstance(value, dict):
        return "{" + ", ".join(f"{json.dumps(k)} = {_inline(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(_inline(v) for v in value) + "]"
    return json.dumps(value)


def test_a_file_may_write_a_section_as_a_table_and_the_environment_still_wins(monkeypatch, tmp_path) -> None:
    config = tmp_path / "site.toml"
    config.write_text('[dimse]\nport = 104\nae_title = "SECTIONED"\n[web]\nhttp_port = 8081\n')
    monkeypatch.setenv("DICOMFLOW_CONFIG", str(config))
    monkeypatch.setenv("DICOMFLOW_DIMSE_PORT", "11300")
    loaded = load_settings()
    assert (loaded.dimse.port, loaded.dimse.ae_title, loaded.web.http_port) == (11300, "SECTIONED", 8081)


def test_an_error_inside_a_section_names_the_flat_key_and_its_variable(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("DICOMFLOW_CONFIG", str(tmp_path / "none.toml"))
    monkeypatch.setenv("DICOMFLOW_DECODE_WORKERS", "0")
    with pytest.raises(SettingsError) as err:
        load_settings()
    assert "'decode_workers' (DICOMFLOW_DECODE_WORKERS)" in str(err.value)


def test_a_copy_with_changed_keys_keeps_the_rest_and_is_validated(tmp_path) -> None:
    settings = Settings(var_dir=tmp_path, dimse_port=104, ae_table=json.loads(PACS))
    changed = settings.with_values(http_port=8081, forward_rules=[{"name": "out", "to": {"ae": "PACS"}}])
    assert (changed.web.http_port, changed.dimse.port, changed.routing.forward_rules[0].name) == (8081, 104, "out")
    with pytest.raises(ValueError, match="NOWHERE"):
        settings.with_values(forward_rules=[{"name": "out", "to": {"ae": "NOWHERE"}}])


def test_a_rule_across_a_sections_keys_names_the_section_and_the_keys(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("DICOMFLOW_CONFIG", str(tmp_path / "none.toml"))
    monkeypatch.setenv("DICOMFLOW_SERVE_REPLICAS", "4")
    monkeypatch.setenv("DICOMFLOW_SERVE_MAX_REPLICAS", "2")
    with pytest.raises(SettingsError) as err:
        load_settings()
    assert "settings [web]" in str(err.value) and "serve_max_replicas (2) is below serve_replicas (4)" in str(err.value)
