import pytest

from archive.settings import SettingsError, load_settings


def test_defaults_are_local_and_embedded(monkeypatch, tmp_path):
    monkeypatch.setenv("DICOMFLOW_CONFIG", str(tmp_path / "none.toml"))
    s = load_settings()
    assert s.bind_host == "127.0.0.1"
    assert s.postgres_dsn is None and s.redis_url is None and s.temporal_address is None
    assert s.blob_backend == "local"
    assert s.effective_postgres_dsn().endswith(f":{s.postgres_port}/dicomflow")


def test_file_then_environment_then_arguments(monkeypatch, tmp_path):
    config = tmp_path / "site.toml"
    config.write_text('http_port = 9100\ndimse_port = 11200\nae_title = "FROMFILE"\n[ae_table.CT1]\nhost = "10.1.1.1"\nport = 104\ntenant = "radiology"\n')
    monkeypatch.setenv("DICOMFLOW_CONFIG", str(config))
    monkeypatch.setenv("DICOMFLOW_DIMSE_PORT", "11300")
    s = load_settings(ae_title="FROMARGS")
    assert s.http_port == 9100  # file
    assert s.dimse_port == 11300  # environment beats file
    assert s.ae_title == "FROMARGS"  # arguments beat both
    assert s.ae_table["CT1"].port == 104
    assert s.tenant_for_ae("CT1", "DICOMFLOW") == "radiology"
    assert s.tenant_for_ae("UNKNOWN", "DICOMFLOW") == s.default_tenant


def test_environment_json_for_tables(monkeypatch, tmp_path):
    monkeypatch.setenv("DICOMFLOW_CONFIG", str(tmp_path / "none.toml"))
    monkeypatch.setenv("DICOMFLOW_AE_TABLE", '{"MR1": {"host": "127.0.0.1", "port": 4242, "tenant": "neuro"}}')
    assert load_settings().tenant_for_ae("X", "MR1") == "neuro"


def test_env_file_chosen_by_dicomflow_env(monkeypatch):
    monkeypatch.delenv("DICOMFLOW_CONFIG", raising=False)
    monkeypatch.setenv("DICOMFLOW_ENV", "local")
    assert load_settings().duplicate_policy == "reject"  # config/local.toml exists and parses


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
