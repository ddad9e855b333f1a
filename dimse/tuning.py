"""Process-wide pynetdicom and pydicom settings for DIMSE processes (the SCP and the workflow
worker, which sends C-MOVE sub-operations and N-EVENT-REPORTs), each measured (bench/dimse_qr.py).
Installed by `dimse.install()`, first of its steps."""

from __future__ import annotations

from typing import Any

from pydicom import config as pydicom_config
from pydicom.uid import UID
from pynetdicom import _config
from pynetdicom.presentation import PresentationContext


def _same_uid(self: UID, memo: dict[int, Any]) -> UID:
    return self


def _copy_context(self: PresentationContext, memo: dict[int, Any]) -> PresentationContext:
    """What deepcopy makes of a context: its attributes are None, ints, bools, UIDs (immutable
    strs) and one list of UIDs, so copying that list is copying it all."""
    copy = PresentationContext.__new__(PresentationContext)
    copy.__dict__.update(self.__dict__)
    copy._transfer_syntax = list(self._transfer_syntax)  # noqa: SLF001 - the one mutable attribute
    return copy


def tune() -> None:
    # every association deep-copies the supported contexts (about 170 SOP classes x 45 transfer
    # syntaxes) and pydicom re-validated each UID while copying: 45-70 ms per association. A UID
    # is an immutable str, so a copy may be the same object (3 ms), and a context is copied by
    # copying its list of UIDs (0.1 ms; the 3 ms were a third of the SCP's time per C-ECHO).
    UID.__deepcopy__ = _same_uid  # type: ignore[attr-defined]
    PresentationContext.__deepcopy__ = _copy_context  # type: ignore[attr-defined]
    # pynetdicom formats every C-FIND answer and request for a debug log that is off (~4% of a find)
    _config.LOG_RESPONSE_IDENTIFIERS = False
    _config.LOG_REQUEST_IDENTIFIERS = False
    # its standard handlers decode every PDU and DIMSE message again to describe them in a log
    # nobody reads at INFO: 16-20% of the CPU of a C-STORE sub-operation
    _config.LOG_HANDLER_LEVEL = "none"
    # pydicom checks every value it converts (a regex per UID in each command set) only to warn;
    # receipt makes its own checks, with refusals, before anything is stored
    pydicom_config.settings.reading_validation_mode = pydicom_config.IGNORE
