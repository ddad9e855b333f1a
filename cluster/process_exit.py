"""Leaving a CLI process once its answer is out, without the interpreter's teardown."""

from __future__ import annotations

import os
import sys
from typing import NoReturn


def exit_without_teardown(code: int) -> NoReturn:
    """Flush what was printed, let a Ray driver say goodbye, then `os._exit`: teardown is where
    native runtimes' leftover threads (Temporal's Rust core) crash a process that already did its work."""
    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():
        ray.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
