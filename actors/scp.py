"""The DIMSE SCP as a Ray actor. Several may share one port (SO_REUSEPORT), one per core."""

from __future__ import annotations

import logging
import tempfile
import threading
from typing import Any

import ray
from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, AllStoragePresentationContexts, _config
from pynetdicom.sop_class import StorageCommitmentPushModel, Verification

from actors.dimse_handlers import DimseHandlers
from actors.dimse_server import FastAssociationServer
from actors.loop_thread import LoopThread
from archive.priority import normal_priority
from archive.settings import Settings
from workflows.ingest import Ingest


def build_ae(settings: Settings) -> AE:
    ae = AE(ae_title=settings.ae_title)
    ae.maximum_pdu_size = settings.dimse_max_pdu
    ae.maximum_associations = 64
    ae.network_timeout = 300
    ae.dimse_timeout = 300
    ae.require_called_aet = False  # the called AE title may select a tenant instead
    for context in AllStoragePresentationContexts:
        ae.add_supported_context(context.abstract_syntax, ALL_TRANSFER_SYNTAXES)
    ae.add_supported_context(Verification, ALL_TRANSFER_SYNTAXES)
    ae.add_supported_context(StorageCommitmentPushModel)
    return ae


class DimseScp:
    """The SCP itself, usable without Ray (a test or a plain process can host it)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.loop = LoopThread("dicomflow-scp-loop")
        self.ingest = self.loop.run(Ingest.open(settings), timeout=60)
        # pynetdicom streams each dataset into a file; put it where a commit is a rename
        _config.STORE_RECV_CHUNKED_DATASET = True
        # private and newer storage SOP classes are stored too, not answered with an abort
        _config.UNRESTRICTED_STORAGE_SERVICE = True
        tempfile.tempdir = str(self.ingest.blobs.spool_dir)
        handlers = DimseHandlers(settings, self.ingest, self.loop)
        self.ae = build_ae(settings)
        self.server = self.ae.make_server(
            (settings.bind_host, settings.dimse_port), evt_handlers=handlers.handlers(), server_class=FastAssociationServer
        )
        self.ae._servers.append(self.server)  # noqa: SLF001 - as AE.start_server does, so shutdown() finds it
        self._thread = threading.Thread(target=self.server.serve_forever, name="dicomflow-scp", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.loop.run(self.ingest.close(), timeout=30)
        self.loop.stop()


@ray.remote(num_cpus=0, max_restarts=-1)
class DimseScpActor:
    def __init__(self, settings_data: dict[str, Any], index: int) -> None:
        logging.basicConfig(level=logging.INFO)
        normal_priority()
        self.index = index
        self.scp = DimseScp(Settings.model_validate(settings_data))

    def ready(self) -> str:
        s = self.scp.settings
        return f"SCP {self.index} {s.ae_title}@{s.bind_host}:{s.dimse_port}"

    def stop(self) -> None:
        self.scp.stop()
