"""Ray starts worker processes at nice 15; an archive's receivers, workers and DICOMweb replicas
should not yield every CPU slice to whatever else runs on the node (the index, Temporal)."""

from __future__ import annotations

import logging
import os


def normal_priority() -> None:
    try:
        os.setpriority(os.PRIO_PROCESS, 0, 0)
    except (PermissionError, OSError):  # unprivileged: keep Ray's niceness
        logging.getLogger("dicomflow").info("running at Ray's default niceness")
