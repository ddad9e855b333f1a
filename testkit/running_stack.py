"""Run `dicomflow up` as a subprocess on free ports, the way an operator would, and wait for it."""

from __future__ import annotations

import json
import os
import random
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from archive.config.settings import Settings

REPO = Path(__file__).resolve().parent.parent
DICOMFLOW = str(Path(sys.executable).parent / "dicomflow")
PORT_KEYS = (
    "postgres_port",
    "redis_port",
    "temporal_port",
    "temporal_ui_port",
    "ray_dashboard_port",
    "http_port",
    "dimse_port",
    "haproxy_stats_port",
    "haproxy_metrics_port",
    "dimse_tls_port",
)


_HANDED_OUT: set[int] = set()


def free_port() -> int:
    """A free port below the kernel's ephemeral range (32768+), so that no outgoing connection can take
    it between now and the server's bind, and below Ray Serve's replica ports (30000+)."""
    while True:
        port = random.randrange(20000, 29999)
        if port in _HANDED_OUT:
            continue
        _HANDED_OUT.add(port)
        with socket.socket() as sock:
            try:
                sock.bind(("0.0.0.0", port))
            except OSError:
                continue
            return port


def settings_env(overrides: dict[str, Any]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DICOMFLOW_")}
    for key, value in overrides.items():
        env["DICOMFLOW_" + key.upper()] = json.dumps(value) if isinstance(value, (dict, list)) else str(value)
    return env


@dataclass
class RunningStack:
    overrides: dict[str, Any]
    log: Path
    process: subprocess.Popen | None = None
    settings: Settings = field(init=False)

    def __post_init__(self) -> None:
        self.settings = Settings(**self.overrides)

    @property
    def env(self) -> dict[str, str]:
        return settings_env(self.overrides)

    def cli(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run([DICOMFLOW, *args], env=self.env, capture_output=True, text=True, timeout=timeout, cwd=REPO)

    def start(self, timeout: float = 240) -> None:
        ready = self.settings.var_path / "run" / "ready"
        ready.unlink(missing_ok=True)
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen([DICOMFLOW, "up"], env=self.env, stdout=log, stderr=subprocess.STDOUT, cwd=REPO)
        deadline = time.monotonic() + timeout
        while not ready.exists():
            if self.process.poll() is not None:
                raise RuntimeError(f"dicomflow up exited with {self.process.returncode}:\n{self.log.read_text()[-4000:]}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"dicomflow up not ready in {timeout} s:\n{self.log.read_text()[-4000:]}")
            time.sleep(0.5)

    def descendants(self) -> list[psutil.Process]:
        try:
            return psutil.Process(self.process.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            return []

    def stop(self) -> subprocess.CompletedProcess:
        result = self.cli("down", timeout=180)
        if self.process is not None:
            self.process.wait(timeout=60)
        return result

    def url(self, path: str = "") -> str:
        return f"{'https' if self.settings.web.https else 'http'}://127.0.0.1:{self.settings.web.http_port}{path}"


def stack_overrides(var_dir: Path, **extra: Any) -> dict[str, Any]:
    values: dict[str, Any] = {key: free_port() for key in PORT_KEYS}
    values.update(var_dir=str(var_dir), stable_seconds=1.0, env="test")
    values.update(extra)
    return values


def processes_using(var_dir: Path) -> list[psutil.Process]:
    """Every process whose command line names the var dir: servers dicomflow started there."""
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        try:
            if any(str(var_dir) in part for part in proc.info["cmdline"] or []):
                found.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return found
