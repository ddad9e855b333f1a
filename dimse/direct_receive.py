"""C-STORE requests read straight from a receiving association's socket.

pynetdicom carries every received PDU as objects through its state machine (DT-2), into a DIMSE
message that writes each fragment to the data set's file with a flush, then through a queue to the
association's thread, which must be woken: 1.2 ms of the SCP's CPU per instance with one
association and 2.3 ms with four, with a handler that does nothing (dcmsend of the bench's real
files). Here the DUL's own thread reads each P-DATA-TF PDU of a receiving association in data
transfer (Sta6). A C-STORE-RQ whose command set arrives whole has its data set written to the spool
file as it arrives, and is then served on this thread by pynetdicom's own `_serve_request`: the
storage service class, the bound handlers and the answer are pynetdicom's, as before.

Everything else is decoded by pynetdicom as it always was: other commands, a command set in pieces,
any PDU while pynetdicom holds part of a message, a requested association (C-GET's stores to us),
and associations watched by PDU, data or DIMSE event handlers. A PDU that breaks PS3.8 in the
middle of a data set aborts the association, as pynetdicom does for a PDU it cannot decode.
"""

from __future__ import annotations

import logging
import struct
import tempfile
from io import BytesIO
from pathlib import Path
from typing import Any

from pynetdicom import PYNETDICOM_IMPLEMENTATION_UID, PYNETDICOM_IMPLEMENTATION_VERSION, _config, evt
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.pdu_primitives import P_DATA

from archive.dicom.part10_meta import encode_file_meta

log = logging.getLogger("dicomflow.scp")
P_DATA_TF = 0x04
PDU_TYPES = range(0x01, 0x08)  # PS3.8 9.3: A-ASSOCIATE-RQ .. A-ABORT
C_STORE_REQUEST, NO_DATASET = 0x0001, 0x0101
_COMMAND, _LAST = 0x01, 0x02
READ_BLOCK = 1 << 18  # bytes asked of the socket per recv
UNLIMITED_PDU_CAP = 1 << 26  # a PDU when this side set no maximum: larger ones abort the association
# handlers that expect to see each PDU or message as pynetdicom decodes it
WATCHERS = (evt.EVT_PDU_RECV, evt.EVT_DATA_RECV, evt.EVT_DIMSE_RECV)


class BrokenPdu(ValueError):
    """A P-DATA-TF PDU that breaks PS3.8 9.3.5."""


def pdvs(body: bytes | memoryview) -> list[tuple[int, int, memoryview]]:
    """The (context id, message control header, fragment) of each PDV in a P-DATA-TF's body."""
    view, items, pos = memoryview(body), [], 0
    while pos < len(view):
        if pos + 6 > len(view):
            raise BrokenPdu("a PDV item shorter than its header")
        (length,) = struct.unpack_from(">I", view, pos)
        if length < 2 or pos + 4 + length > len(view):
            raise BrokenPdu(f"a PDV item of {length} bytes in a PDU of {len(view)}")
        items.append((view[pos + 4], view[pos + 5], view[pos + 6 : pos + 4 + length]))
        pos += 4 + length
    return items


def command_fields(command: bytes | memoryview) -> dict[int, bytes]:
    """The values of an implicit VR little endian command set (PS3.7 E.1), by element number."""
    values, pos, data = {}, 0, bytes(command)
    while pos + 8 <= len(data):
        group, element, length = struct.unpack_from("<HHI", data, pos)
        pos += 8
        if group != 0 or pos + length > len(data):
            raise BrokenPdu("a malformed command set")
        values[element] = data[pos : pos + length]
        pos += length
    return values


def _us(fields: dict[int, bytes], element: int) -> int | None:
    value = fields.get(element)
    return struct.unpack("<H", value)[0] if value is not None and len(value) == 2 else None


def _text(fields: dict[int, bytes], element: int) -> str:
    return fields.get(element, b"").decode("latin-1").rstrip("\x00 ")


def store_request(fields: dict[int, bytes], context_id: int) -> C_STORE:
    """The C-STORE primitive pynetdicom's message decoding makes of these command fields; its
    setters check each value as they do there (ValueError for a UID or AE title they refuse)."""
    request = C_STORE()
    request.MessageID = _us(fields, 0x0110)
    request.AffectedSOPClassUID = _text(fields, 0x0002)
    request.AffectedSOPInstanceUID = _text(fields, 0x1000)
    request.Priority = _us(fields, 0x0700) or 0
    if 0x1030 in fields:
        request.MoveOriginatorApplicationEntityTitle = _text(fields, 0x1030)
    if 0x1031 in fields:
        request.MoveOriginatorMessageID = _us(fields, 0x1031)
    request.DataSet = BytesIO()  # empty, as with pynetdicom's chunked receive: the data set is in the file
    request._context_id = context_id  # noqa: SLF001 - as message_to_primitive sets it
    return request


class _Incoming:
    """A C-STORE-RQ whose data set is still arriving, written to its spool file as it does."""

    def __init__(self, request: C_STORE, context_id: int, syntax: str) -> None:
        self.request, self.context_id = request, context_id
        # as pynetdicom's own: the SCP points tempfile at the spool directory, and the storage service
        # class closes and removes the file by its name once the handler is done
        self.file = tempfile.NamedTemporaryFile(delete=False, mode="wb", suffix=".dcm")  # noqa: SIM115
        self.path = Path(self.file.name)
        try:
            self.file.write(b"\x00" * 128 + b"DICM")
            self.file.write(
                encode_file_meta(
                    str(request.AffectedSOPClassUID),
                    str(request.AffectedSOPInstanceUID),
                    syntax,
                    (PYNETDICOM_IMPLEMENTATION_UID, PYNETDICOM_IMPLEMENTATION_VERSION),
                )
            )
        except Exception:
            self.discard()
            raise

    def complete(self) -> C_STORE:
        """The request with its data set at `path`; the closed file goes with it, so the storage
        service class removes what its handler left behind, as it does with its own."""
        self.file.close()
        self.request._dataset_path = self.path  # noqa: SLF001 - what pynetdicom's chunked receive sets
        self.request._dataset_file = self.file  # type: ignore[assignment]  # noqa: SLF001
        return self.request

    def discard(self) -> None:
        self.file.close()
        self.path.unlink(missing_ok=True)


class DirectReceive:
    """One per association's DUL, used by its thread only."""

    def __init__(self, dul: Any) -> None:
        self.dul = dul
        self.incoming: _Incoming | None = None

    def takes_next_pdu(self) -> bool:
        """Whether this reads the next PDU rather than pynetdicom."""
        if self.incoming is not None:
            return True
        assoc = self.dul.assoc
        return (
            _config.STORE_RECV_CHUNKED_DATASET
            and not assoc.is_requestor
            and assoc.is_established
            and self.dul.state_machine.current_state == "Sta6"
            and assoc.dimse.message is None
            and assoc.dimse.msg_queue.empty()  # nothing pynetdicom decoded waits to be served
            and self.dul.event_queue.empty()  # nor a state machine event from an earlier PDU
            and not any(assoc.get_handlers(watched) for watched in WATCHERS)
        )

    def read_pdu(self) -> None:
        """Read one PDU; a C-STORE's is handled here, any other goes to pynetdicom's decoding."""
        pdu = self._read_whole_pdu()
        if pdu is None:
            return
        if pdu[0] != P_DATA_TF:
            self._to_pynetdicom(pdu)
            return
        try:
            items = pdvs(memoryview(pdu)[6:])
        except BrokenPdu as err:
            if self.incoming is None:
                self._to_pynetdicom(pdu)  # pynetdicom answers a broken PDU as it always did
                return
            self._abort(str(err))
            return
        start = 0
        if self.incoming is None:
            if not self._starts_store(items):
                self._to_pynetdicom(pdu)
                return
            start = 1  # the command set that opened it
        self._take(items[start:])

    def close(self) -> None:
        """The association ended: a data set still arriving is discarded."""
        if self.incoming is not None:
            self.incoming.discard()
            self.incoming = None

    def _read_whole_pdu(self) -> bytearray | None:
        sock = self.dul.socket
        try:
            pdu = self._recv(sock, 6)
            pdu_type, _, length = struct.unpack(">BBI", pdu)
            if pdu_type not in PDU_TYPES or length > self._pdu_limit():  # read nothing more of it
                self._abort(f"a PDU of type {pdu_type:#04x} and {length} bytes")
                return None
            pdu += self._recv(sock, length)
        except (OSError, EOFError, AttributeError):  # AttributeError: the socket was closed meanwhile
            # pynetdicom's answer to a connection that broke in the middle of a PDU
            self.close()
            self.dul.event_queue.put("Evt17")
            return None
        return pdu

    @staticmethod
    def _recv(sock: Any, n: int) -> bytearray:
        buf = bytearray()
        raw = sock.socket
        while len(buf) < n:
            chunk = raw.recv(min(READ_BLOCK, n - len(buf)))
            if not chunk:
                raise EOFError("the peer closed the connection")
            buf += chunk
        return buf

    def _pdu_limit(self) -> int:
        limit = int(self.dul.assoc.acceptor.maximum_length or 0)
        return limit + 6 if limit else UNLIMITED_PDU_CAP  # the limit is on the PDU's body; 6 for slack

    def _starts_store(self, items: list[tuple[int, int, memoryview]]) -> bool:
        """The first PDV is a whole C-STORE-RQ command set announcing a data set, on an accepted context:
        the data set's file is opened for it."""
        if not items:
            return False
        context_id, control, fragment = items[0]
        if control & (_COMMAND | _LAST) != _COMMAND | _LAST:
            return False
        try:
            fields = command_fields(fragment)
        except BrokenPdu:
            return False
        context = self.dul.assoc._accepted_cx.get(context_id)  # noqa: SLF001 - pynetdicom's accepted contexts by id
        if _us(fields, 0x0100) != C_STORE_REQUEST or _us(fields, 0x0800) in (None, NO_DATASET) or context is None:
            return False
        try:
            request = store_request(fields, context_id)
        except (ValueError, TypeError, UnicodeError):
            return False  # pynetdicom decodes it, and answers what it finds wrong as it always did
        self.incoming = _Incoming(request, context_id, str(context.transfer_syntax[0]))
        return True

    def _take(self, items: list[tuple[int, int, memoryview]]) -> None:
        for index, (context_id, control, fragment) in enumerate(items):
            incoming = self.incoming
            if incoming is None:  # a further message in the same PDU: pynetdicom decodes it
                self._pynetdicom_pdvs(items[index:])
                return
            if control & _COMMAND or context_id != incoming.context_id:
                self._abort("a command or another context's fragment inside a C-STORE's data set")
                return
            incoming.file.write(fragment)
            if control & _LAST:
                self.incoming = None
                self.dul.assoc._serve_request(incoming.complete(), context_id)  # noqa: SLF001 - as its reactor does

    def _pynetdicom_pdvs(self, items: list[tuple[int, int, memoryview]]) -> None:
        """What DT-2 hands pynetdicom's DIMSE layer for these PDVs."""
        primitive = P_DATA()
        primitive.presentation_data_value_list = [(cid, bytes([control]) + bytes(data)) for cid, control, data in items]
        self.dul.assoc.dimse.receive_primitive(primitive)

    def _to_pynetdicom(self, pdu: bytearray) -> None:
        """pynetdicom's own handling of a PDU it read (DULServiceProvider._read_pdu_data's end)."""
        try:
            decoded, event = self.dul._decode_pdu(pdu)  # noqa: SLF001
        except Exception:  # noqa: BLE001 - as pynetdicom: an undecodable PDU is Evt19
            log.info("a PDU that cannot be decoded; the association is aborted", exc_info=True)
            self.dul.event_queue.put("Evt19")
            return
        self.dul.event_queue.put(event)
        self.dul._recv_pdu.put(decoded)  # noqa: SLF001

    def _abort(self, why: str) -> None:
        log.warning("association from %s aborted: %s", self.dul.assoc.requestor.address, why)
        self.close()
        self.dul.event_queue.put("Evt19")  # invalid PDU: A-ABORT, as pynetdicom sends for one
