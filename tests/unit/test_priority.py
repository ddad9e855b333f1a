"""The study workflow's heavy steps run on threads that yield the CPU to receipt (archive/priority)."""

from __future__ import annotations

import asyncio
import os
import threading
from pathlib import Path

from activities.context import ActivityContext
from archive.config.settings import Settings
from archive.priority import BACKGROUND_STEP


def _own_niceness() -> int:
    return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())


def test_background_work_runs_nicer_than_the_process_and_leaves_it_alone(tmp_path: Path) -> None:
    ctx = ActivityContext(Settings(var_dir=tmp_path), pool=None, blobs=None, acknowledgements=None)  # type: ignore[arg-type]  # none is used here
    before = _own_niceness()
    try:
        background = asyncio.run(ctx.in_background(_own_niceness))
    finally:
        ctx.background.shutdown()
    assert background == min(19, before + BACKGROUND_STEP)
    assert _own_niceness() == before  # the calling thread (the worker's event loop) keeps its priority
