"""What a DIMSE service needs besides its gate: the settings, the actor's event loop, the index,
the blob store and a Temporal client. Handed to each service, so none reaches through another."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from psycopg_pool import AsyncConnectionPool
from temporalio.client import Client

from actors.dimse_gate import DimseGate
from actors.loop_thread import LoopThread
from archive.blobstore.base import BlobStore
from archive.config.settings import Settings


@dataclass(frozen=True)
class DimseContext:
    settings: Settings
    loop: LoopThread
    gate: DimseGate
    pool: AsyncConnectionPool
    blobs: BlobStore
    temporal_client: Callable[[], Awaitable[Client]]
