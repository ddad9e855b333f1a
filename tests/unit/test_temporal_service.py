"""The embedded Temporal dev server's command line: whatever bind_host is, its frontend and Web UI
listen on loopback only (issue 27 item 1), the UI under the path DICOMweb's origin proxies."""

from archive.config.settings import TEMPORAL_UI_PATH, Settings
from cluster.services.temporal import embedded_temporal_service


def _flag(argv: list[str], name: str) -> str:
    return argv[argv.index(name) + 1]


def test_frontend_and_ui_stay_on_loopback_on_a_network_bind_host(tmp_path) -> None:
    settings = Settings(
        var_dir=tmp_path, bind_host="10.1.2.3", auth="oidc", oidc_issuer=["https://idp.example"], oidc_audience="a"
    )
    argv = embedded_temporal_service(settings).argv
    assert _flag(argv, "--ip") == "127.0.0.1"
    assert _flag(argv, "--ui-ip") == "127.0.0.1"
    assert _flag(argv, "--ui-public-path") == TEMPORAL_UI_PATH
    assert "10.1.2.3" not in argv
