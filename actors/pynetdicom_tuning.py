"""Process-wide pynetdicom and pydicom settings for DIMSE processes (the SCP and the workflow
worker, which sends C-MOVE sub-operations and N-EVENT-REPORTs), each measured (bench/dimse_qr.py)."""

from __future__ import annotations

from typing import Any

from pydicom import config as pydicom_config
from pydicom.uid import UID
from pynetdicom import _config

from actors import pynetdicom_find_responses, pynetdicom_get_pending, pynetdicom_reactor


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
    # its standard handlers decode every PDU and DIMSE message again to describe them in a log
    # nobody reads at INFO: 16-20% of the CPU of a C-STORE sub-operation
    _config.LOG_HANDLER_LEVEL = "none"
    # pydicom checks every value it converts (a regex per UID in each command set) only to warn;
    # receipt makes its own checks, with refusals, before anything is stored
    pydicom_config.settings.reading_validation_mode = pydicom_config.IGNORE
    pynetdicom_reactor.install()
    pynetdicom_find_responses.install()
    pynetdicom_get_pending.install()
