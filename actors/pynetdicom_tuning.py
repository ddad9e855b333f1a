"""Process-wide pynetdicom and pydicom settings for the SCP, each measured (bench/dimse_qr.py)."""

from __future__ import annotations

from typing import Any

from pydicom.uid import UID
from pynetdicom import _config


def _same_uid(self: UID, memo: dict[int, Any]) -> UID:
    return self


def tune() -> None:
    # every association deep-copies the supported contexts (about 170 SOP classes x 45 transfer
    # syntaxes) and pydicom re-validated each UID while copying: 45-70 ms per association. A UID
    # is an immutable str, so a copy may be the same object (3 ms).
    UID.__deepcopy__ = _same_uid  # type: ignore[attr-defined]
    # pynetdicom formats every C-FIND answer and request for a debug log that is off (~4% of a find)
    _config.LOG_RESPONSE_IDENTIFIERS = False
    _config.LOG_REQUEST_IDENTIFIERS = False
