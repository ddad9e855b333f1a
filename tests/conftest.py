"""Session fixtures: one real dicomflow stack (PostgreSQL, Redis, Temporal, Ray) started by
`dicomflow up` exactly as an operator starts it, on free ports under a temporary var dir."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

os.environ["DICOMFLOW_ENV"] = "test"
for _key in [k for k in os.environ if k.startswith("DICOMFLOW_") and k != "DICOMFLOW_ENV"]:
    del os.environ[_key]

from testkit.running_stack import RunningStack, free_port, processes_using, stack_overrides  # noqa: E402
from testkit.s3_server import cold_s3_settings, moto_s3  # noqa: E402
from tests.auth import stack_auth_settings  # noqa: E402

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
if not DATA.exists():
    DATA = Path("/work/shared/data")

COMMIT_SCU_AE = "COMMITSCU"
TENANT_B_AE = "TENANT_B"  # a modality of tenant "tenantb"
MODALITY_AE = "MODALITY"  # dcmsend's calling AE title in the tests
STORE_AE = "PYNETDICOM"  # pynetdicom's default
WORKSTATION_AE = "WORKSTATION"  # may call only from a network the tests are not on
NOSTORE_AE = "NOSTORE"  # may ask for storage commitment, not store
QR_AE = "QRSCU"  # a workstation of tenant "qr": stores, finds, moves and gets
QR_OTHER_AE = "QR_OTHER"  # a workstation of tenant "tenantb": finds, moves, gets
STORESCP_AE = "STORESCP"  # dcmtk's storescp, a C-MOVE destination of any tenant
STORESCP_B_AE = "STORESCP_B"  # a C-MOVE destination that belongs to tenant "tenantb"
QR_SERVICES = ["find", "move", "get"]
UPS_AE = "UPSSCU"  # a modality of tenant "ups", whose worklist UPS-RS fills
SENDER_AE = "SENDER"  # `dicomflow send` into tenant "send"
ROUTE_AE = "ROUTER_MOD"  # a modality of tenant "route", whose MR studies a forwarding rule sends onward
RESEARCH_AE = "RESEARCH_MOD"  # a modality of tenant "research", whose studies go de-identified to RESEARCH_PACS
RESEARCH_PACS_AE = "RESEARCH_PACS"  # a research archive (a storescp at the STORESCP port), any tenant
FORWARD_CLIENT = "dicomflow-forwarder"  # the OAuth2 client a STOW-RS forward authenticates as
LIVE_AE = "LIVE_MOD"  # a modality of tenant "live", whose instances go to an AI service as they arrive
RUNTIME_AE = "RUNTIME_MOD"  # a modality of tenant "rt", whose forwarding rules are added at run time
COPY_AE = "COPY_MOD"  # a modality of tenant "copysrc", whose studies a rule copies into tenant "teaching"
TEACHING_AE = "TEACHING_WS"  # a teaching workstation of tenant "teaching" (so the archive knows that tenant)
IOCM_AE = "IOCM_MOD"  # a modality and QA workstation of tenant "iocm": stores (rejection notes too), finds, moves
UPDATE_AE = "UPDATE_WS"  # a workstation of tenant "upd", whose studies are corrected (issue 29)
PIR_AE = "PIR_WS"  # a workstation of tenant "pir" (whose patients HL7 ADT messages update): finds, reads the worklist
TIER_AE = "TIER_WS"  # a workstation of tenant "tier", whose old studies move to the cold store: stores, finds, gets, moves
QUOTA_AE = "QUOTA_MOD"  # a modality of tenant "quota", which may store at most QUOTA_BYTES
QUOTA_BYTES = 1_000_000
LEGACY_AE = "LEGACY"  # a legacy archive migrated from (dcmtk's dcmqrscp, tests/test_migrate.py) into tenant "migrated"
LEGACY_B_AE = "LEGACY_B"  # the same legacy archive under a second AE title, migrated into tenant "migrated-b"
LEGACY_PORT = free_port()
IMPORT_AE = "IMPORTER"  # `dicomflow import` of a disk dump into tenant "imported"
HL7_FACILITY = "GENHOSP"  # the hospital's patient administration system: its ADT messages apply to tenant "pir"
LOOPBACK = ["127.0.0.0/8"]
REFETCH_SECONDS = 5  # an unknown key id refetches the issuer's keys at most this often
OHIF_ORIGIN = "http://localhost:3000"  # a viewer served from elsewhere, allowed by CORS


def run(coro):
    return asyncio.run(coro)


@pytest.fixture(scope="session")
def data_dir() -> Path:
    assert DATA.exists(), f"the shared test data is missing at {DATA}"
    return DATA


@pytest.fixture(scope="session")
def commit_scu_port() -> int:
    return free_port()


@pytest.fixture(scope="session")
def storescp_port() -> int:
    return free_port()


@pytest.fixture(scope="session")
def pki(tmp_path_factory) -> dict[str, Path]:
    """A local CA with a server certificate for the archive and a client certificate for a modality,
    made the way an operator makes them (`dicomflow certs`' functions)."""
    from cluster.certs import init_ca, issue

    folder = tmp_path_factory.mktemp("pki")
    ca = init_ca(folder)
    server, server_key = issue(folder, "archive", "server")
    client, client_key = issue(folder, "modality", "client")
    # DICOMweb is HTTPS in the test stack, as in a hospital: requests (and dicomweb-client, and the
    # `dicomflow send` subprocesses) trust this CA the way an operator's REQUESTS_CA_BUNDLE would
    os.environ["REQUESTS_CA_BUNDLE"] = str(ca)
    return {"ca": ca, "server": server, "server_key": server_key, "client": client, "client_key": client_key}


def _forward_client(folder: Path) -> Path:
    """A client of the test issuer that may write to tenant "stowdst", its secret in a 0600 file."""
    import secrets

    from tests.auth import AUDIENCE, issuer

    secret = secrets.token_urlsafe(24)
    path = folder / "client_secret"
    path.touch(mode=0o600)
    path.write_text(secret)
    issuer().register_client(FORWARD_CLIENT, secret, tenants=["stowdst"], roles=["writer"], audience=AUDIENCE)
    return path


@pytest.fixture(scope="session")
def cold_s3() -> Iterator[str]:
    """The stack's cold tier: an S3-compatible server (tests/test_tiering.py moves studies to it)."""
    with moto_s3() as endpoint:
        yield endpoint


@pytest.fixture(scope="session")
def stack(tmp_path_factory, commit_scu_port, storescp_port, pki, cold_s3) -> RunningStack:
    var = tmp_path_factory.mktemp("stack") / "var"
    http_port = free_port()
    client_secret = _forward_client(tmp_path_factory.mktemp("forwarding"))
    from tests.auth import issuer

    # auth on, as a hospital runs it: every DICOMweb test carries a token from a real issuer,
    # every DIMSE test calls from an AE the table knows
    overrides = stack_overrides(
        var,
        http_port=http_port,
        **stack_auth_settings(),
        ae_table={
            COMMIT_SCU_AE: {"host": "127.0.0.1", "port": commit_scu_port},
            TENANT_B_AE: {"host": "127.0.0.1", "port": 1, "tenant": "tenantb"},
            MODALITY_AE: {"allowed_hosts": LOOPBACK},
            STORE_AE: {"allowed_hosts": LOOPBACK},
            WORKSTATION_AE: {"allowed_hosts": ["10.99.0.0/16"]},
            NOSTORE_AE: {"allowed_hosts": LOOPBACK, "services": ["commit"]},
            QR_AE: {"allowed_hosts": LOOPBACK, "tenant": "qr", "services": ["store", "worklist", "mpps", *QR_SERVICES]},
            QR_OTHER_AE: {"allowed_hosts": LOOPBACK, "tenant": "tenantb", "services": QR_SERVICES},
            UPS_AE: {"allowed_hosts": LOOPBACK, "tenant": "ups", "services": ["worklist", "mpps"]},
            SENDER_AE: {"allowed_hosts": LOOPBACK, "tenant": "send", "services": ["store"]},
            ROUTE_AE: {"allowed_hosts": LOOPBACK, "tenant": "route", "services": ["store"]},
            RESEARCH_AE: {"allowed_hosts": LOOPBACK, "tenant": "research", "services": ["store"]},
            LIVE_AE: {"allowed_hosts": LOOPBACK, "tenant": "live", "services": ["store"]},
            RUNTIME_AE: {"allowed_hosts": LOOPBACK, "tenant": "rt", "services": ["store"]},
            COPY_AE: {"allowed_hosts": LOOPBACK, "tenant": "copysrc", "services": ["store"]},
            TEACHING_AE: {"allowed_hosts": LOOPBACK, "tenant": "teaching", "services": ["find"]},
            IOCM_AE: {"allowed_hosts": LOOPBACK, "tenant": "iocm", "services": ["store", *QR_SERVICES]},
            UPDATE_AE: {"allowed_hosts": LOOPBACK, "tenant": "upd", "services": ["store", *QR_SERVICES]},
            PIR_AE: {"allowed_hosts": LOOPBACK, "tenant": "pir", "services": ["worklist", "find"]},
            QUOTA_AE: {"allowed_hosts": LOOPBACK, "tenant": "quota", "services": ["store"]},
            LEGACY_AE: {
                "host": "127.0.0.1",
                "port": LEGACY_PORT,
                "allowed_hosts": LOOPBACK,
                "tenant": "migrated",
                "services": ["store"],
            },
            LEGACY_B_AE: {
                "host": "127.0.0.1",
                "port": LEGACY_PORT,
                "allowed_hosts": LOOPBACK,
                "tenant": "migrated-b",
                "services": ["store"],
            },
            IMPORT_AE: {"allowed_hosts": LOOPBACK, "tenant": "imported", "services": ["store"]},
            TIER_AE: {"allowed_hosts": LOOPBACK, "tenant": "tier", "services": ["store", *QR_SERVICES]},
            RESEARCH_PACS_AE: {"host": "127.0.0.1", "port": storescp_port, "services": []},
            STORESCP_AE: {"host": "127.0.0.1", "port": storescp_port, "services": []},
            STORESCP_B_AE: {"host": "127.0.0.1", "port": storescp_port, "tenant": "tenantb", "services": []},
        },
        forward_rules=[  # tests/test_forwarding.py
            {"name": "mr-to-pacs", "tenant": "route", "match": {"ModalitiesInStudy": "MR"}, "to": {"ae": STORESCP_AE}},
            {"name": "ct-to-pacs", "tenant": "route", "match": {"ModalitiesInStudy": "CT"}, "to": {"ae": STORESCP_AE}},
            {"name": "research", "tenant": "research", "to": {"ae": RESEARCH_PACS_AE}, "deidentify": "basic"},
            {"name": "live-ai", "tenant": "live", "when": "instance", "to": {"ae": STORESCP_AE}},
            {"name": "to-teaching", "tenant": "copysrc", "to": {"tenant": "teaching"}},  # a copy into another tenant
            {  # a partner's DICOMweb (here another tenant of this archive) over STOW-RS with OAuth2 client credentials
                "name": "to-partner",
                "tenant": "stowsrc",
                "to": {
                    "stow": f"https://127.0.0.1:{http_port}/tenants/stowdst/dicomweb",
                    "token_url": issuer().token_endpoint,
                    "client_id": FORWARD_CLIENT,
                    "client_secret_file": str(client_secret),
                    "ca_file": str(pki["ca"]),
                },
            },
        ],
        lifecycle_rules=[  # tests/test_lifecycle.py, tenant "life" only
            {
                "name": "life-ct",
                "tenant": "life",
                "match": {"ModalitiesInStudy": "CT"},
                "after_days": 30,
                "action": "compress",
                "syntax": "jpeg2000-lossless",
            },
            {
                "name": "life-mr",
                "tenant": "life",
                "match": {"ModalitiesInStudy": "MR"},
                "after_days": 30,
                "action": "compress",
                "syntax": "jpegls-lossless",
            },
            {"name": "life-retention", "tenant": "life", "after_days": 3650, "action": "delete"},
            {"name": "kill-compress", "tenant": "life-kill", "after_days": 30, "action": "compress", "syntax": "jpegls-lossless"},
            # due at 21 days, when no other rule is: the retention kill test runs it alone
            {"name": "kill-delete", "tenant": "life-delete", "after_days": 20, "action": "delete"},
            {"name": "tier-old", "tenant": "tier", "after_days": 365, "action": "tier"},  # tests/test_tiering.py
            {"name": "tier-kill", "tenant": "tier-kill", "after_days": 365, "action": "tier"},
        ],
        **cold_s3_settings(cold_s3),
        quota_bytes={"quota": QUOTA_BYTES},
        hl7_port=free_port(),
        hl7_senders={
            HL7_FACILITY: {"tenant": "pir", "allowed_hosts": LOOPBACK},
            "FARHOSP": {"tenant": "pir", "allowed_hosts": ["10.99.0.0/16"]},
        },
        cors_allow_origins=[OHIF_ORIGIN],
        tls_cert_file=str(pki["server"]),
        tls_key_file=str(pki["server_key"]),
        tls_ca_file=str(pki["ca"]),
        https=True,
        # as long as a real one, so a report within the tests' waits comes from what the archive
        # holds and the 10 s grace for never-received references (issue 31), not from the timeout
        commitment_timeout_seconds=600,
        oidc_refetch_seconds=REFETCH_SECONDS,
        scp_processes=2,  # two SCP actors share the DIMSE port (SO_REUSEPORT)
    )
    running = RunningStack(overrides, var.parent / "up.log")
    running.start()
    yield running
    result = running.stop()
    assert result.returncode == 0, result.stdout + result.stderr
    assert not processes_using(var), "dicomflow down left processes running"


@pytest.fixture(scope="session")
def settings(stack):
    return stack.settings
