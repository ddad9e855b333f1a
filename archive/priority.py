"""Ray starts worker processes at nice 15; an archive's receivers, workers and DICOMweb replicas
should not yield every CPU slice to whatever else runs on the node (the index, Temporal).

The study workflow's heavy steps (verify, transcode, JSON) run on background threads instead,
which yield to receipt: on a busy node a modality's C-STORE is answered first, and the series'
metadata follows when the node has a core to spare. Linux keeps a niceness per thread."""

from __future__ import annotations

import logging
import os
import threading


def normal_priority() -> None:
    try:
        os.setpriority(os.PRIO_PROCESS, 0, 0)
    except (PermissionError, OSError):  # unprivileged: keep Ray's niceness
        logging.getLogger("dicomflow").info("running at Ray's default niceness")


BACKGROUND_STEP = 10  # nicer than the process by this much (weights 1024 : 110 at nice 0 : 10)


def background_priority() -> None:
    """This thread only (Linux: setpriority of a thread id); a thread pool's initializer."""
    thread = threading.get_native_id()
    try:
        os.setpriority(os.PRIO_PROCESS, thread, min(19, os.getpriority(os.PRIO_PROCESS, thread) + BACKGROUND_STEP))
    except (PermissionError, OSError):
        logging.getLogger("dicomflow").info("background thread kept its niceness")
