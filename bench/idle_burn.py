"""What an idle stack costs, per process, in CPU ms per second (issue 33: the CPU per acknowledged
instance counts every process, and at bench rates the idle burn is 3-5 ms of it).

    python -m bench.idle_burn [--seconds 60] [--set NAME=VALUE ...]

starts a stack as the benches do (scp_processes 2, one worker, one replica), lets it settle, then
splits the CPU of every process under `dicomflow up` over the window. `--set` puts variables in the
stack's environment (Ray and Serve read theirs at start) to compare a tuning A/B in one run each.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import psutil

from bench.cpu_split import CpuSplit
from testkit.running_stack import RunningStack, stack_overrides


def idle_split(environment: dict[str, str], seconds: float, settle: float) -> dict[str, float]:
    """ms of CPU per second of each process kind, the stack idle."""
    saved = {name: os.environ.get(name) for name in environment}
    os.environ.update(environment)
    try:
        with tempfile.TemporaryDirectory(prefix="dicomflow-idle-") as tmp:
            stack = RunningStack(stack_overrides(Path(tmp) / "var", scp_processes=2), Path(tmp) / "stack.log")
            stack.start()
            try:
                time.sleep(settle)
                split = CpuSplit({"head": psutil.Process(stack.process.pid)})
                split.start()
                time.sleep(seconds)
                return {label: cpu / seconds * 1000 for label, cpu in split.stop().items()}
            finally:
                stack.stop()
    finally:
        for name, value in saved.items():
            os.environ.pop(name, None) if value is None else os.environ.__setitem__(name, value)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--settle", type=float, default=30)
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE")
    args = parser.parse_args()
    environment = dict(item.split("=", 1) for item in args.set)
    split = idle_split(environment, args.seconds, args.settle)
    for label, ms in split.items():
        print(f"  {label:40s} {ms:7.1f} ms/s")
    print(json.dumps({"set": environment, "total_ms_per_s": round(sum(split.values()), 1), "split": split}))


if __name__ == "__main__":
    os.environ.setdefault("DICOMFLOW_ENV", "test")
    main()
