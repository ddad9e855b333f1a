"""Session fixtures: one real dicomflow stack (PostgreSQL, Redis, Temporal, Ray) started by
`dicomflow up` exactly as an operator starts it, on free ports under a temporary var dir."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

os.environ["DICOMFLOW_ENV"] = "test"
for _key in [k for k in os.environ if k.startswith("DICOMFLOW_") and k != "DICOMFLOW_ENV"]:
    del os.environ[_key]

from tests.stack import RunningStack, free_port, processes_using, stack_overrides  # noqa: E402

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
if not DATA.exists():
    DATA = Path("/work/shared/data")

COMMIT_SCU_AE = "COMMITSCU"
TENANT_B_AE = "TENANT_B"


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
def stack(tmp_path_factory, commit_scu_port) -> RunningStack:
    var = tmp_path_factory.mktemp("stack") / "var"
    overrides = stack_overrides(
        var,
        ae_table={
            COMMIT_SCU_AE: {"host": "127.0.0.1", "port": commit_scu_port},
            TENANT_B_AE: {"host": "127.0.0.1", "port": 1, "tenant": "tenantb"},
        },
        commitment_timeout_seconds=20,
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
