"""The HL7 v2 listener: MLLP (over TLS when hl7_tls) on bind_host:hl7_port, a protocol adapter
like the SCP. Each message is read whole up to hl7_max_message_bytes, parsed by the `hl7`
library, checked against hl7_senders (sending facility, then the peer's address), audited, turned
into an update order and answered with an ACK: AA once its workflow is started (durable in
Temporal), AR/AE with the reason otherwise. One idle connection costs a socket, nothing more."""

from __future__ import annotations

import asyncio
import logging
import os
import ssl
from typing import Any

import hl7
import ray
from hl7.mllp import HL7StreamReader, HL7StreamWriter, start_hl7_server
from temporalio.client import Client

from actors.hl7_adt import AdtOrder, Refused, ack, adt_order, sending_facility
from actors.loop_thread import LoopThread
from archive.audit import AuditAction, AuditEvent, Outcome
from archive.config.peers import HL7Sender
from archive.config.settings import Settings
from archive.config.tls import ssl_server_context
from archive.priority import normal_priority
from archive.resources import Resources
from receiving.adt import AdtRefused, take_adt

log = logging.getLogger("dicomflow.hl7")
IDLE_SECONDS = 300.0  # an interface engine keeps its connection open between messages
MAX_CONNECTIONS = 64


class Hl7Listener:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.loop = LoopThread("dicomflow-hl7-loop")
        self.resources = self.loop.run(Resources.open(settings, pool_size=4), timeout=60)
        self._client: Client | None = None
        self._open = 0
        self.server = self.loop.run(self._start(), timeout=30)

    async def _start(self) -> asyncio.AbstractServer:
        s = self.settings
        context: ssl.SSLContext | None = None
        if s.hl7.tls:
            assert s.tls.cert_file and s.tls.key_file
            context = ssl_server_context(s.tls.cert_file, s.tls.key_file, s.tls.ca_file, require_client_cert=True)
        return await start_hl7_server(self._connected, s.bind_host, s.hl7.port, limit=s.hl7.max_message_bytes, ssl=context)

    async def _connected(self, reader: HL7StreamReader, writer: HL7StreamWriter) -> None:
        peer = str((writer.get_extra_info("peername") or ("?",))[0])
        self._open += 1
        try:
            if self._open <= MAX_CONNECTIONS:
                await self._converse(reader, writer, peer)
        finally:
            self._open -= 1
            writer.close()

    async def _converse(self, reader: HL7StreamReader, writer: HL7StreamWriter, peer: str) -> None:
        while True:
            try:
                message = await asyncio.wait_for(reader.readmessage(), IDLE_SECONDS)
            except (asyncio.IncompleteReadError, asyncio.TimeoutError, ConnectionError):
                return
            except Exception as err:  # noqa: BLE001 - too long, not MLLP, not HL7: nothing to acknowledge
                log.warning("HL7 from %s dropped: %s: %s", peer, type(err).__name__, err)
                return
            writer.writeblock((await self.answer(message, peer)).encode())
            await writer.drain()

    async def answer(self, message: hl7.Message, peer: str) -> str:
        facility = sending_facility(message)
        code, text = "AA", ""
        try:
            sender = self._sender(facility, peer)
            order = adt_order(message)
            text = await self._take(sender, facility, order)
        except Refused as err:
            code, text = err.code, err.reason
        except AdtRefused as err:
            code, text = "AR", str(err)
        except Exception as err:  # noqa: BLE001 - the index or Temporal down: the sender tries again
            log.warning("HL7 message from %s not taken", facility, exc_info=True)
            code, text = "AE", f"not applied now ({type(err).__name__}); send again"
        self._audit(message, facility, peer, code, text)
        return ack(message, code, text)

    def _sender(self, facility: str, peer: str) -> HL7Sender:
        sender = self.settings.hl7.senders.get(facility)
        if sender is None:
            raise Refused("AR", f"unknown sending facility {facility[:40]!r}")
        if not sender.allows(peer):
            raise Refused("AR", f"sending facility {facility[:40]!r} may not send from {peer}")
        return sender

    async def _take(self, sender: HL7Sender, facility: str, order: AdtOrder) -> str:
        if self._client is None:
            self._client = await Client.connect(
                self.settings.effective_temporal_address(), namespace=self.settings.temporal.namespace
            )
        taken = await take_adt(
            self.resources.pool, self._client, self.settings.temporal.task_queue, sender.tenant,
            facility, order.event, order.control_id, order.patient_id, order.changes.values,
        )  # fmt: skip
        return "" if taken else "already received; applied once"

    def _audit(self, message: hl7.Message, facility: str, peer: str, code: str, text: str) -> None:
        sender = self.settings.hl7.senders.get(facility)
        msh = message.segment("MSH")
        self.resources.audit.record(
            AuditEvent(
                action=AuditAction.PATIENT_RECORD,
                outcome=Outcome.SUCCESS if code == "AA" else Outcome.MINOR_FAILURE,
                subject=f"hl7:{facility[:64]}",
                method="hl7",
                source="hl7",
                peer=peer,
                tenant=sender.tenant if sender else None,
                detail={"message_type": str(msh(9))[:40], "control_id": str(msh(10))[:64], "ack": code, "reason": text or None},
            )
        )

    def stop(self) -> None:
        self.server.close()
        self.loop.run(self.resources.close(), timeout=30)
        self.loop.stop()


@ray.remote(num_cpus=0, max_restarts=-1)
class Hl7ListenerActor:
    def __init__(self, settings_data: dict[str, Any]) -> None:
        normal_priority()
        self.listener = Hl7Listener(Settings.model_validate(settings_data))

    def ready(self) -> str:
        s = self.listener.settings
        return f"HL7 MLLP{' over TLS' if s.hl7.tls else ''} on {s.bind_host}:{s.hl7.port} (pid {os.getpid()})"

    def stop(self) -> None:
        self.listener.stop()
