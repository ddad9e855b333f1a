"""CPU seconds per kind of process (the SCP, the workflow worker, Temporal, PostgreSQL, ...) between two
moments, over process trees whose members come and go: what the benches' cost per instance is read from."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator

import psutil


def process_label(proc: psutil.Process, node: str) -> str:
    """What a process is, for the CPU split: the service, or the Ray actor/daemon it runs."""
    name = proc.name()
    cmdline = " ".join(proc.cmdline()[:3])
    for marker, label in (("postgres", "PostgreSQL"), ("temporal", "Temporal"), ("redis", "Redis"), ("haproxy", "HAProxy")):
        if marker in name or marker in cmdline:
            return label
    if name.startswith("ray::"):
        return f"{node} {name.removeprefix('ray::').split(':')[0].split('.')[0]}"
    if name in ("raylet", "gcs_server"):
        return f"{node} {name}"
    return f"{node} other Ray/Python: {_which(proc.cmdline()) or name}"


def _which(cmdline: list[str]) -> str:
    """Which of Ray's helper processes: a dashboard head, the log monitor, the `dicomflow up` driver."""
    first = cmdline[0].split(" ")[0] if cmdline else ""
    if first.startswith("ray-dashboard"):
        return first
    for index, arg in enumerate(cmdline[1:3], start=1):
        if arg.endswith(".py") or arg.endswith("/dicomflow"):
            return arg.rsplit("/", 1)[-1]
        if arg in ("-m", "-c") and index + 2 < len(cmdline):  # a module or a program's text: its first argument names it
            return cmdline[index + 1] if arg == "-m" else cmdline[index + 2]
    return ""


class CpuSplit:
    """CPU seconds per labelled process between start() and stop(), over processes that come and go."""

    def __init__(self, roots: dict[str, psutil.Process]) -> None:
        self.roots = roots
        self.before: dict[int, float] = {}
        self.last: dict[int, tuple[str, float]] = {}

    def _processes(self) -> Iterator[tuple[str, psutil.Process]]:
        for node, root in self.roots.items():
            try:
                for proc in [root, *root.children(recursive=True)]:
                    yield node, proc
            except psutil.NoSuchProcess:
                continue

    def sample(self) -> None:
        for node, proc in self._processes():
            try:
                times = proc.cpu_times()
                self.last[proc.pid] = (process_label(proc, node), times.user + times.system)
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue

    def start(self) -> None:
        self.sample()
        self.before = {pid: seconds for pid, (_, seconds) in self.last.items()}

    def stop(self) -> dict[str, float]:
        self.sample()
        split: dict[str, float] = defaultdict(float)
        for pid, (label, seconds) in self.last.items():
            split[label] += seconds - self.before.get(pid, 0.0)
        return dict(sorted(split.items(), key=lambda item: -item[1]))
