"""A server program dicomflow starts, remembers by PID, and stops."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import psutil


def _primary_group(user: str | None) -> int | None:
    if user is None:
        return None
    import pwd

    return pwd.getpwnam(user).pw_gid


class ServiceError(RuntimeError):
    """An embedded service could not start; the message says what to do."""


def port_is_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def ephemeral_port(host: str) -> int:
    """A port the kernel says is free on `host` now (for listeners Ray starts with a port we pass)."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def installed_program(name: str) -> str | None:
    """A console script of this venv (beside the running Python), else one on PATH."""
    beside = Path(sys.executable).parent / name
    return str(beside) if beside.exists() else shutil.which(name)


def require_free_port(name: str, host: str, port: int, setting: str) -> None:
    if not port_is_free(host, port):
        raise ServiceError(
            f"{name}: port {host}:{port} is already in use. Set DICOMFLOW_{setting.upper()} "
            f"(or '{setting}' in the config file) to a free port, or stop what is using it."
        )


def read_pid(pidfile: Path) -> int | None:
    try:
        pid = int(pidfile.read_text().split()[0])
        return pid if _alive(psutil.Process(pid)) else None
    except (OSError, ValueError, IndexError, psutil.NoSuchProcess):
        return None


def stop_pid(pid: int, *, sig: int = signal.SIGTERM, timeout: float = 30.0) -> None:
    """Stop a process and everything in its process group, politely first."""
    try:
        proc = psutil.Process(pid)
        family = [proc, *proc.children(recursive=True)]
    except psutil.NoSuchProcess:
        return
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        return
    for straggler in _wait_gone(family, timeout):
        try:
            straggler.kill()
        except psutil.NoSuchProcess:
            pass
    _wait_gone(family, 5)


def _alive(proc: psutil.Process) -> bool:
    """Running and not a zombie: an exited child its parent has not reaped yet is gone for us."""
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _wait_gone(procs: list[psutil.Process], timeout: float) -> list[psutil.Process]:
    deadline = time.monotonic() + timeout
    alive = [p for p in procs if _alive(p)]
    while alive and time.monotonic() < deadline:
        time.sleep(0.1)
        alive = [p for p in alive if _alive(p)]
    return alive


@dataclass
class ManagedProcess:
    """One child server process with a pidfile and a log file under var/."""

    name: str
    argv: list[str]
    run_dir: Path
    log_dir: Path
    env: dict[str, str] = field(default_factory=dict)
    user: str | None = None
    stop_signal: int = signal.SIGTERM
    cwd: Path | None = None
    process: subprocess.Popen | None = None

    @property
    def pidfile(self) -> Path:
        return self.run_dir / f"{self.name}.pid"

    @property
    def logfile(self) -> Path:
        return self.log_dir / f"{self.name}.log"

    def stop_leftover(self) -> None:
        """A previous run that died without `down` may have left this server running."""
        pid = read_pid(self.pidfile)
        if pid is not None:
            stop_pid(pid, sig=self.stop_signal)
        self.pidfile.unlink(missing_ok=True)

    def start(self) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log = open(self.logfile, "ab")
        self.process = subprocess.Popen(
            self.argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **self.env},
            cwd=self.cwd,
            user=self.user,
            group=_primary_group(self.user),
            extra_groups=[] if self.user else None,  # keep root's groups out of the server
            start_new_session=True,  # Ctrl-C in the terminal goes to `up`, which stops us in order
        )
        log.close()
        self.pidfile.write_text(f"{self.process.pid}\n")

    def wait_ready(self, probe: Callable[[], bool], timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise ServiceError(
                    f"{self.name} exited with code {self.process.returncode}; see {self.logfile}:\n{self.log_tail()}"
                )
            try:
                if probe():
                    return
            except Exception:  # noqa: BLE001 - not ready yet, whatever the reason
                pass
            time.sleep(0.2)
        raise ServiceError(f"{self.name} did not become ready in {timeout:.0f} s; see {self.logfile}:\n{self.log_tail()}")

    def log_tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.logfile.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self, timeout: float = 30.0) -> None:
        pid = self.process.pid if self.process else read_pid(self.pidfile)
        if pid is not None:
            stop_pid(pid, sig=self.stop_signal, timeout=timeout)
        if self.process is not None:
            try:
                self.process.wait(timeout=1)
            except subprocess.TimeoutExpired:
                pass
        self.pidfile.unlink(missing_ok=True)
