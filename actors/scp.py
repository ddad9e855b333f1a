"""The DIMSE SCP as a Ray actor. Several may share one port (SO_REUSEPORT), one per core."""

from __future__ import annotations

import asyncio
import logging
import os
import ssl
import tempfile
from typing import Any

import ray
from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, AllStoragePresentationContexts
from pynetdicom.sop_class import StorageCommitmentPushModel, Verification  # type: ignore[attr-defined]  # generated at import
from pynetdicom.transport import ThreadedAssociationServer

import dimse
from actors.dimse_find import QUERY_MODELS
from actors.dimse_get import GET_MODELS
from actors.dimse_handlers import DimseHandlers
from actors.dimse_move import MOVE_MODELS
from actors.dimse_mpps import MPPS
from actors.loop_thread import LoopThread
from archive.config.sections import DimseSettings
from archive.config.settings import Settings
from archive.config.tls import ssl_server_context
from archive.identity.tokens import verifier_for
from archive.priority import normal_priority
from archive.query.mwl import WORKLIST_FIND
from archive.resources import Resources
from archive.services.receipt_timing import ReceiptHistogram, publish
from dimse.server import serve_in_thread
from receiving.ingest import Ingest

log = logging.getLogger("dicomflow.scp")
UNCOUNTED = 1 << 20  # pynetdicom's association limit, out of the way; dimse_max_associations applies


def build_ae(dimse: DimseSettings) -> AE:
    ae = AE(ae_title=dimse.ae_title)
    ae.maximum_pdu_size = dimse.max_pdu
    # dicomflow counts associations itself, from their A-ASSOCIATE-RQ on (DimseGate._hold):
    # pynetdicom's count includes connections that never sent one, so idle sockets would use it up
    ae.maximum_associations = UNCOUNTED
    ae.acse_timeout = dimse.acse_timeout_seconds  # a silent new connection is dropped after this
    ae.network_timeout = dimse.idle_seconds
    ae.dimse_timeout = dimse.idle_seconds
    ae.require_called_aet = False  # the called AE title may select a tenant instead (checked per caller)
    for context in AllStoragePresentationContexts:
        # either role: a modality stores to us (we are SCP), a C-GET requester receives from us (SCU)
        assert context.abstract_syntax is not None  # every one of pynetdicom's storage contexts has one
        ae.add_supported_context(context.abstract_syntax, ALL_TRANSFER_SYNTAXES, scu_role=True, scp_role=True)
    ae.add_supported_context(Verification, ALL_TRANSFER_SYNTAXES)
    ae.add_supported_context(StorageCommitmentPushModel)
    for sop_class in (*QUERY_MODELS, *GET_MODELS, *MOVE_MODELS, WORKLIST_FIND, MPPS):
        ae.add_supported_context(sop_class)
    return ae


class DimseScp:
    """The SCP itself, usable without Ray (a test or a plain process can host it)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.loop = LoopThread("dicomflow-scp-loop")
        self.resources = self.loop.run(Resources.open(settings), timeout=60)
        self.ingest = self.loop.run(Ingest.open(self.resources), timeout=60)
        dimse.install(receiving=True)
        # pynetdicom streams each received dataset into a temporary file: put it where a commit is a rename
        tempfile.tempdir = str(self.ingest.blobs.spool_dir)
        verifier = verifier_for(settings, self.resources.cache.client)
        handlers = DimseHandlers(settings, self.ingest, self.loop, verifier)
        self.timings = self.loop.submit(self._publish_timings(handlers.receipt_times))
        self.ae = build_ae(settings.dimse)
        self.servers = [self._serve(settings.dimse.port, handlers, None)]
        if settings.tls.enabled:
            assert settings.tls.cert_file and settings.tls.key_file
            context = ssl_server_context(
                settings.tls.cert_file, settings.tls.key_file, settings.tls.ca_file, settings.tls.require_client_cert
            )
            self.servers.append(self._serve(settings.dimse.tls_port, handlers, context))

    def _serve(self, port: int, handlers: DimseHandlers, context: ssl.SSLContext | None) -> ThreadedAssociationServer:
        return serve_in_thread(
            self.ae, (self.settings.bind_host, port), handlers.handlers(), context, self.settings.dimse.max_connections_per_peer
        )

    async def _publish_timings(self, histogram: ReceiptHistogram) -> None:
        """Every few seconds, for `/metrics` on the Serve replicas (archive/services/receipt_timing.py)."""
        name = f"{self.settings.bind_host}:{self.settings.dimse.port}/{os.getpid()}"
        while True:
            try:
                await publish(self.resources.cache.client, name, histogram)
            except Exception:  # noqa: BLE001 - metrics never stop receipt; Redis may be restarting
                log.warning("could not publish receipt timings", exc_info=True)
            await asyncio.sleep(5)

    def stop(self) -> None:
        self.timings.cancel()
        for server in self.servers:
            server.shutdown()
        self.loop.run(self.ingest.close(), timeout=30)
        self.loop.run(self.resources.close(), timeout=30)
        self.loop.stop()


@ray.remote(num_cpus=0, max_restarts=-1)
class DimseScpActor:
    def __init__(self, settings_data: dict[str, Any], index: int) -> None:
        normal_priority()
        self.index = index
        self.scp = DimseScp(Settings.model_validate(settings_data))

    def ready(self) -> str:
        s = self.scp.settings
        tls = f", TLS on {s.dimse.tls_port}" if s.tls.enabled else ""
        return f"SCP {self.index} {s.dimse.ae_title}@{s.bind_host}:{s.dimse.port}{tls}"

    def stop(self) -> None:
        self.scp.stop()
