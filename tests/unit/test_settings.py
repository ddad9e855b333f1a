import tomllib
from pathlib import Path

import pytest

from archive.config import settings as settings_module
from archive.config.flat_keys import flat_value
from archive.config.settings import Settings, SettingsError, load_settings


def test_defaults_are_local_and_embedded(monkeypatch, tmp_path):
    monkeypatch.setenv("DICOMFLOW_CONFIG", str(tmp_path / "none.toml"))
    s = load_settings()
    assert s.bind_host == "127.0.0.1"
    assert s.index.dsn is None and s.cache.url is None and s.temporal.address is None
    assert s.storage.backend == "local"
    assert s.effective_postgres_dsn().endswith(f":{s.index.port}/dicomflow")


def test_file_then_environment_then_arguments(monkeypatch, tmp_path):
    config = tmp_path / "site.toml"
    config.write_text(
        'http_port = 9100\ndimse_port = 11200\nae_title = "FROMFILE"\n[ae_table.CT1]\nhost = "10.1.1.1"\nport = 104\ntenant = "radiology"\n'
    )
    monkeypatch.setenv("DICOMFLOW_CONFIG", str(config))
    monkeypatch.setenv("DICOMFLOW_DIMSE_PORT", "11300")
    s = load_settings(ae_title="FROMARGS")
    assert s.web.http_port == 9100  # file
    assert s.dimse.port == 11300  # environment beats file
    assert s.dimse.ae_title == "FROMARGS"  # arguments beat both
    assert s.dimse.ae_table["CT1"].port == 104
    assert s.tenant_for_ae("CT1", "DICOMFLOW") == "radiology"
    assert s.tenant_for_ae("UNKNOWN", "DICOMFLOW") == s.default_tenant


def test_environment_json_for_tables(monkeypatch, tmp_path):
    monkeypatch.setenv("DICOMFLOW_CONFIG", str(tmp_path / "none.toml"))
    monkeypatch.setenv("DICOMFLOW_AE_TABLE", '{"MR1": {"host": "127.0.0.1", "port": 4242, "tenant": "neuro"}}')
    assert load_settings().tenant_for_ae("X", "MR1") == "neuro"


def test_env_file_chosen_by_dicomflow_env(monkeypatch, tmp_path):
    """DICOMFLOW_ENV names the file under the config folder. The values differ from the defaults, so
    each assert below fails if the file was not the one read."""
    monkeypatch.delenv("DICOMFLOW_CONFIG", raising=False)
    monkeypatch.setattr(settings_module, "CONFIG_DIR", tmp_path)
    (tmp_path / "staging.toml").write_text('duplicate_policy = "replace"\nhttp_port = 9123\n')
    (tmp_path / "other.toml").write_text("http_port = 9124\n")
    default = Settings()
    assert default.ingest.duplicate_policy != "replace" and default.web.http_port not in (9123, 9124)

    monkeypatch.setenv("DICOMFLOW_ENV", "staging")
    staging = load_settings()
    assert (staging.ingest.duplicate_policy, staging.web.http_port) == ("replace", 9123)
    monkeypatch.setenv("DICOMFLOW_ENV", "other")
    other = load_settings()
    assert (other.ingest.duplicate_policy, other.web.http_port) == (default.ingest.duplicate_policy, 9124)
    monkeypatch.setenv("DICOMFLOW_CONFIG", str(tmp_path / "staging.toml"))  # an explicit file wins over the env's
    assert load_settings().web.http_port == 9123


def test_shipped_local_file_loads_as_written(monkeypatch):
    """config/local.toml (DICOMFLOW_ENV=local, the default) is a valid settings file: every key in it
    is known (an unknown one would raise) and comes out with the value written there."""
    monkeypatch.delenv("DICOMFLOW_CONFIG", raising=False)
    monkeypatch.delenv("DICOMFLOW_ENV", raising=False)
    shipped = settings_module.CONFIG_DIR / "local.toml"
    assert settings_module.config_file() == shipped
    written = tomllib.loads(shipped.read_text())
    assert written, f"{shipped} sets nothing"
    loaded = load_settings()
    for key, value in written.items():
        got = flat_value(loaded, key)
        assert (str(got) if isinstance(got, Path) else got) == value, key


@pytest.mark.parametrize(
    "variable, value, named",
    [
        ("DICOMFLOW_HTTP_PORT", "eighty", "http_port"),
        ("DICOMFLOW_DIMSE_PORT", "70000", "dimse_port"),
        ("DICOMFLOW_DUPLICATE_POLICY", "overwrite-silently", "duplicate_policy"),
        ("DICOMFLOW_AE_TITLE", "A-TITLE-THAT-IS-FAR-TOO-LONG", "ae_title"),
        ("DICOMFLOW_SERVE_REPLICAS", "0", "serve_replicas"),
        ("DICOMFLOW_NO_SUCH_SETTING", "1", None),
    ],
)
def test_bad_values_name_the_key(monkeypatch, tmp_path, variable, value, named):
    monkeypatch.setenv("DICOMFLOW_CONFIG", str(tmp_path / "none.toml"))
    monkeypatch.setenv(variable, value)
    if named is None:  # unknown DICOMFLOW_ variables are ignored by the environment source
        load_settings()
        return
    with pytest.raises(SettingsError) as err:
        load_settings()
    assert named in str(err.value) and variable in str(err.value)


def test_unknown_key_in_file_is_an_error(monkeypatch, tmp_path):
    config = tmp_path / "bad.toml"
    config.write_text("htp_port = 1\n")
    monkeypatch.setenv("DICOMFLOW_CONFIG", str(config))
    with pytest.raises(SettingsError, match="htp_port"):
        load_settings()


def test_broken_toml_says_which_file(monkeypatch, tmp_path):
    config = tmp_path / "broken.toml"
    config.write_text("http_port = [\n")
    monkeypatch.setenv("DICOMFLOW_CONFIG", str(config))
    with pytest.raises(SettingsError, match="broken.toml"):
        load_settings()


@pytest.mark.parametrize(
    "variable, value, field, expected",
    [
        ("DICOMFLOW_OIDC_ISSUER", "https://idp.example", "oidc_issuer", ["https://idp.example"]),  # the README's form
        (
            "DICOMFLOW_OIDC_ISSUER",
            "https://a.example, https://b.example",
            "oidc_issuer",
            ["https://a.example", "https://b.example"],
        ),
        ("DICOMFLOW_OIDC_ISSUER", '["https://c.example"]', "oidc_issuer", ["https://c.example"]),
        ("DICOMFLOW_NODE_ROLES", "web,dimse", "node_roles", ["web", "dimse"]),
        ("DICOMFLOW_CORS_ALLOW_ORIGINS", "http://localhost:3000", "cors_allow_origins", ["http://localhost:3000"]),
        ("DICOMFLOW_POSTGRES_CLIENT_NETWORKS", "10.0.0.0/8", "postgres_client_networks", ["10.0.0.0/8"]),
    ],
)
def test_list_settings_take_a_plain_value_from_the_environment(monkeypatch, tmp_path, variable, value, field, expected):
    monkeypatch.setenv("DICOMFLOW_CONFIG", str(tmp_path / "none.toml"))
    monkeypatch.setenv(variable, value)
    assert flat_value(load_settings(), field) == expected


@pytest.mark.parametrize(
    "variable, value, form",
    [("DICOMFLOW_OIDC_ISSUER", "[https://idp.example", "JSON list"), ("DICOMFLOW_AE_TABLE", "CT1=10.0.0.5:104", "JSON object")],
)
def test_unreadable_environment_value_names_the_variable_and_its_form(monkeypatch, tmp_path, variable, value, form):
    monkeypatch.setenv("DICOMFLOW_CONFIG", str(tmp_path / "none.toml"))
    monkeypatch.setenv(variable, value)
    with pytest.raises(SettingsError) as err:
        load_settings()
    assert variable in str(err.value) and form in str(err.value)
