"""The fence around pynetdicom: everything in dicomflow that patches pynetdicom or reaches into
its internals lives in this package, and nowhere else.

pynetdicom offers no hooks for what dicomflow measured it needs (shorter reactor polls, C-FIND and
C-STORE answers written straight to the socket, C-STORE requests read straight from it, C-MOVE
sub-operations run by a workflow, stored files sent as they are), so these modules replace classes and functions inside it. Such patches
break silently when pynetdicom changes, so `install()` refuses any version they were not written
and tested against, and tests/unit/test_dimse_contract.py fails when a name they patch or read
disappears or changes its signature. An upgrade therefore breaks here, in one known room:
re-run that test, adapt the modules it names, then add the version to SUPPORTED_PYNETDICOM.

The rest of the code uses pynetdicom's public API, or this package.
"""

from __future__ import annotations

import threading

import pynetdicom
from pynetdicom import _config

from dimse import find_responses, get_pending, reactor, relayed_move, store_responses, tuning

# the pynetdicom releases these patches were written and tested against (pyproject.toml pins it)
SUPPORTED_PYNETDICOM = ("3.0.4",)

_lock = threading.Lock()
_installed: set[str] = set()


class UnsupportedPynetdicom(RuntimeError):
    """The installed pynetdicom is not one the fence was written for."""


def check_version(installed: str | None = None) -> None:
    version = pynetdicom.__version__ if installed is None else installed
    if version not in SUPPORTED_PYNETDICOM:
        raise UnsupportedPynetdicom(
            f"pynetdicom {version} is installed, but dicomflow's DIMSE layer (dimse/) patches pynetdicom's internals and "
            f"was written for pynetdicom {', '.join(SUPPORTED_PYNETDICOM)} only: install that version "
            "(pip install -c constraints.txt -e .), or adapt dimse/ and run tests/unit/test_dimse_contract.py"
        )


def install(*, receiving: bool = False) -> None:
    """Every patch, once per process, in the order they build on each other; `receiving` adds what
    a process accepting associations needs (the SCP). For associations created from now on."""
    check_version()
    with _lock:
        if "common" not in _installed:
            _install_common()
            _installed.add("common")
        if receiving and "receiving" not in _installed:
            _install_receiving()
            _installed.add("receiving")


def _install_common() -> None:
    tuning.tune()  # pydicom and pynetdicom settings, the per-association context copies
    # a file whose stored syntax the receiver accepted goes out as its bytes, not decoded and re-encoded
    _config.STORE_SEND_CHUNKED_DATASET = True
    reactor.install()  # the DUL class: every later patch lends its socket
    # the DIMSE service provider is one class chain, each install a subclass of the one before:
    # find answers <- C-GET pending throttle <- C-STORE responses; the last one installed is used
    find_responses.install()
    get_pending.install()
    store_responses.install()


def _install_receiving() -> None:
    # pynetdicom streams each received dataset into a file (the SCP puts it where a commit is a rename)
    _config.STORE_RECV_CHUNKED_DATASET = True
    # private and newer storage SOP classes are stored too, not answered with an abort
    _config.UNRESTRICTED_STORAGE_SERVICE = True
    relayed_move.install()  # C-MOVE sub-operations run in a workflow; the SCP relays progress
