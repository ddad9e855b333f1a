"""A legacy archive to migrate from, for tests and benchmarks: dcmtk's `dcmqrscp`, its database
filled by `dcmqridx` with real files, answering C-FIND and C-MOVE under one or more AE titles and
sending C-MOVEs to the destinations it is told of (AE title, host, port)."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

INDEX_CHUNK = 200  # files per dcmqridx call (its command line)


def _config(port: int, areas: dict[str, Path], destinations: dict[str, tuple[str, int]]) -> str:
    hosts = "\n".join(f"dest{n} = ({ae}, {host}, {p})" for n, (ae, (host, p)) in enumerate(destinations.items()))
    aes = "\n".join(f"{ae} {path} RW (100000, 1024mb) ANY" for ae, path in areas.items())
    return (
        f"NetworkTCPPort = {port}\nMaxPDUSize = 131072\nMaxAssociations = 32\n"
        f"HostTable BEGIN\n{hosts}\nHostTable END\nVendorTable BEGIN\nVendorTable END\n"
        f"AETable BEGIN\n{aes}\nAETable END\n"
    )


def index_files(area: Path, files: list[Path]) -> None:
    """Register `files` (which stay where they are) in the storage area's database."""
    area.mkdir(parents=True, exist_ok=True)
    for start in range(0, len(files), INDEX_CHUNK):
        subprocess.run(["dcmqridx", str(area), *map(str, files[start : start + INDEX_CHUNK])], check=True, capture_output=True)


def _wait_listening(port: int, process: subprocess.Popen, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"dcmqrscp exited with {process.returncode}")
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise RuntimeError(f"dcmqrscp did not listen on {port} in {timeout} s")


@contextmanager
def legacy_pacs(
    folder: Path, port: int, areas: dict[str, list[Path]], destinations: dict[str, tuple[str, int]]
) -> Iterator[subprocess.Popen]:
    """dcmqrscp on `port`, one AE title per storage area (its files indexed under `folder`), moving to
    `destinations` (AE title -> (host, port)). Stopped, with the associations it forked, on exit."""
    if shutil.which("dcmqrscp") is None:
        raise RuntimeError("dcmqrscp is not installed (dcmtk: `make test` installs it)")
    paths = {ae: folder / f"area-{ae.lower()}" for ae in areas}
    for ae, files in areas.items():
        index_files(paths[ae], files)
    config = folder / "dcmqrscp.cfg"
    config.write_text(_config(port, paths, destinations))
    log = open(folder / "dcmqrscp.log", "ab")  # noqa: SIM115 - closed below, after the process
    env = {**os.environ, "TCP_NODELAY": "1"}  # dcmtk's sends stall on Nagle's algorithm without it
    process = subprocess.Popen(
        ["dcmqrscp", "-c", str(config), str(port)], stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
    )
    try:
        _wait_listening(port, process)
        yield process
    finally:
        try:
            os.killpg(process.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        process.wait(timeout=20)
        log.close()
