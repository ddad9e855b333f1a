"""The contract between dimse/ and pynetdicom: every name the fence patches, subclasses, calls
or reads inside pynetdicom (and the pydicom names tuning.py patches) still exists, with the
parameters the fence calls it with. An upgrade of pynetdicom that moves one of them fails here,
by name, instead of in a C-STORE at a hospital; `dimse.install()` refuses a version this was
not run against."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import pydicom.uid
import pynetdicom
import pynetdicom.association
import pynetdicom.dul
import pynetdicom.service_class
import pytest
from pynetdicom import _config, dimse_messages, dimse_primitives, dsutils, evt, pdu_primitives, presentation, transport
from pynetdicom.ae import ApplicationEntity
from pynetdicom.association import Association
from pynetdicom.dimse import DIMSEServiceProvider
from pynetdicom.dul import DULServiceProvider
from pynetdicom.service_class import QueryRetrieveServiceClass, ServiceClass

import dimse


def _params(func: Callable[..., Any]) -> list[str]:
    return list(inspect.signature(func).parameters)


# (what, the callable, the parameter names the fence relies on, in order)
SIGNATURES: list[tuple[str, Callable[..., Any], list[str]]] = [
    ("DULServiceProvider.__init__ (reactor.BusyAwareDUL)", DULServiceProvider.__init__, ["self", "assoc"]),
    ("DULServiceProvider.send_pdu", DULServiceProvider.send_pdu, ["self", "primitive"]),
    ("DULServiceProvider.run_reactor", DULServiceProvider.run_reactor, ["self"]),
    ("DULServiceProvider._process_recv_primitive", DULServiceProvider._process_recv_primitive, ["self"]),
    ("DULServiceProvider._is_transport_event", DULServiceProvider._is_transport_event, ["self"]),
    # direct_receive: the DUL's read of one PDU, replaced; pynetdicom's decoding and serving, called
    ("DULServiceProvider._read_pdu_data", DULServiceProvider._read_pdu_data, ["self"]),
    ("DULServiceProvider._decode_pdu", DULServiceProvider._decode_pdu, ["self", "bytestream"]),
    ("Association._serve_request", Association._serve_request, ["self", "msg", "context_id"]),
    ("DIMSEServiceProvider.receive_primitive", DIMSEServiceProvider.receive_primitive, ["self", "primitive"]),
    ("DIMSEServiceProvider.__init__ (find_responses.FindResponseCache)", DIMSEServiceProvider.__init__, ["self", "assoc"]),
    ("DIMSEServiceProvider.send_msg", DIMSEServiceProvider.send_msg, ["self", "primitive", "context_id"]),
    (
        "Association.send_c_store (stored_send.send_as_stored)",
        Association.send_c_store,
        ["self", "dataset", "msg_id", "priority", "originator_aet", "originator_id"],
    ),
    ("Association.kill", Association.kill, ["self"]),
    ("Association.abort", Association.abort, ["self", "block"]),
    ("Association.release", Association.release, ["self"]),
    ("Association.get_handlers", Association.get_handlers, ["self", "event"]),
    ("QueryRetrieveServiceClass._move_scp (relayed_move)", QueryRetrieveServiceClass._move_scp, ["self", "req", "context"]),
    ("ServiceClass.validate_status", ServiceClass.validate_status, ["self", "status", "rsp"]),
    ("evt.trigger", evt.trigger, ["assoc", "event", "attrs"]),
    ("association.uid_to_service_class", pynetdicom.association.uid_to_service_class, ["uid"]),
    (
        "service_class.encode (find_responses._encode_answer)",
        pynetdicom.service_class.encode,
        ["ds", "is_implicit_vr", "is_little_endian", "deflated"],
    ),
    ("dsutils.encode", dsutils.encode, ["ds", "is_implicit_vr", "is_little_endian", "deflated"]),
    ("dsutils.split_dataset", dsutils.split_dataset, ["path"]),
    (
        "ApplicationEntity.make_server (server.serve_in_thread)",
        ApplicationEntity.make_server,
        ["self", "address", "ae_title", "contexts", "ssl_context", "evt_handlers", "server_class", "kwargs"],
    ),
    ("AssociationServer.get_request (server.FastAssociationServer)", transport.AssociationServer.get_request, ["self"]),
    ("AssociationServer.server_bind", transport.AssociationServer.server_bind, ["self"]),
    ("AssociationServer.process_request", transport.AssociationServer.process_request, ["self", "request", "client_address"]),
    (
        "ThreadedAssociationServer.process_request_thread",
        transport.ThreadedAssociationServer.process_request_thread,
        ["self", "request", "client_address"],
    ),
    ("C_FIND_RSP.primitive_to_message", dimse_messages.C_FIND_RSP.primitive_to_message, ["self", "primitive"]),
    # server.FastAssociationServer: per-peer limit at accept, TLS handshake on the connection's thread
    (
        "ThreadedAssociationServer.verify_request",
        transport.ThreadedAssociationServer.verify_request,
        ["self", "request", "client_address"],
    ),
    (
        "ThreadedAssociationServer.finish_request",
        transport.ThreadedAssociationServer.finish_request,
        ["self", "request", "client_address"],
    ),
    (
        "AssociationServer.__init__ (FastAssociationServer passes it on)",
        transport.AssociationServer.__init__,
        ["self", "ae", "address", "ae_title", "contexts", "ssl_context", "evt_handlers"],
    ),
]

# (owner, attribute) that the fence assigns, subclasses or reads
ATTRIBUTES: list[tuple[object, str]] = [
    (pynetdicom, "__version__"),
    (pynetdicom.association, "DULServiceProvider"),  # replaced by reactor.BusyAwareDUL
    (pynetdicom.association, "DIMSEServiceProvider"),  # replaced by the find/get/store chain
    (pynetdicom.association, "uid_to_service_class"),  # wrapped by relayed_move
    (pynetdicom.association, "time"),  # reactor's sleeps go through its replacement
    (pynetdicom.dul, "time"),
    (pynetdicom.service_class, "encode"),  # replaced by find_responses._encode_answer
    (_config, "LOG_RESPONSE_IDENTIFIERS"),
    (_config, "LOG_REQUEST_IDENTIFIERS"),
    (_config, "LOG_HANDLER_LEVEL"),
    (_config, "STORE_SEND_CHUNKED_DATASET"),
    (_config, "STORE_RECV_CHUNKED_DATASET"),
    (_config, "UNRESTRICTED_STORAGE_SERVICE"),
    (DULServiceProvider, "_is_transport_event"),
    (Association, "is_requestor"),
    (Association, "accepted_contexts"),
    (DIMSEServiceProvider, "dul"),
    (DIMSEServiceProvider, "maximum_pdu_size"),
    (QueryRetrieveServiceClass, "is_cancelled"),
    (dimse_primitives.C_CANCEL, "MessageIDBeingRespondedTo"),
    (dimse_primitives.C_FIND, "Identifier"),
    (dimse_primitives.C_GET, "MessageIDBeingRespondedTo"),
    (dimse_primitives.C_STORE, "AffectedSOPInstanceUID"),
    (transport.AssociationSocket, "ready"),
    (ApplicationEntity, "acse_timeout"),  # scp.build_ae: how long a silent connection is kept
    (ApplicationEntity, "maximum_associations"),  # scp.build_ae moves it out of the way
    (transport.ThreadedAssociationServer, "shutdown_request"),
    (presentation.PresentationContext, "transfer_syntax"),
    (pydicom.uid.UID, "__deepcopy__") if hasattr(pydicom.uid.UID, "__deepcopy__") else (pydicom.uid, "UID"),
    (pdu_primitives.P_DATA, "__init__"),
    (pdu_primitives.P_DATA, "presentation_data_value_list"),
    (_config, "STORE_RECV_CHUNKED_DATASET"),
    (pynetdicom, "PYNETDICOM_IMPLEMENTATION_UID"),  # direct_receive's File Meta, as create_file_meta writes it
    (pynetdicom, "PYNETDICOM_IMPLEMENTATION_VERSION"),
    (dimse_primitives.C_STORE, "_dataset_path"),  # direct_receive hands the request's data set over as a file
    (dimse_primitives.C_STORE, "_dataset_file"),
    (dimse_primitives.C_STORE, "MoveOriginatorApplicationEntityTitle"),
]


@pytest.mark.parametrize(("what", "func", "expected"), SIGNATURES, ids=[s[0] for s in SIGNATURES])
def test_every_patched_or_called_name_keeps_its_parameters(what: str, func: Callable[..., Any], expected: list[str]) -> None:
    assert _params(func)[: len(expected)] == expected, f"{what}: pynetdicom changed its parameters; adapt dimse/"


@pytest.mark.parametrize(("owner", "name"), ATTRIBUTES, ids=[f"{getattr(o, '__name__', o)}.{n}" for o, n in ATTRIBUTES])
def test_every_patched_or_read_name_exists(owner: object, name: str) -> None:
    assert hasattr(owner, name), f"{getattr(owner, '__name__', owner)}.{name} is gone: adapt dimse/"


def _dul_instance_attributes() -> set[str]:
    """What DULServiceProvider.__init__ assigns on self (read from its source, so no association is needed)."""
    source = inspect.getsource(DULServiceProvider.__init__)
    return {
        line.split("self.", 1)[1].split(" ")[0].split(":")[0] for line in source.splitlines() if "self." in line and "=" in line
    }


def test_the_dul_still_has_what_the_reactor_reads_and_replaces() -> None:
    assigned = _dul_instance_attributes()
    # _run_loop_delay: BusyAwareDUL turns it into a property and ignores pynetdicom's assignment
    for name in (
        "_run_loop_delay",
        "to_user_queue",
        "to_provider_queue",
        "state_machine",
        "_idle_timer",
        "socket",
        "event_queue",  # direct_receive: Evt17/Evt19, and the events of the PDUs it hands back
        "_recv_pdu",
    ):
        assert name in assigned, f"DULServiceProvider.__init__ no longer sets self.{name}: adapt dimse/reactor.py"


def test_an_association_still_has_what_the_fence_reads() -> None:
    assoc = Association(ApplicationEntity(), "requestor")  # not started: no thread, no socket
    for name in (
        "is_established",
        "dul",
        "dimse",
        "acse",
        "acceptor",
        "requestor",
        "dimse_timeout",
        "network_timeout",
        "_accepted_cx",
    ):
        assert hasattr(assoc, name), f"Association.{name} is gone: adapt dimse/"
    assert hasattr(assoc.dimse, "msg_queue") and hasattr(assoc.dimse, "cancel_req"), "the DIMSE queues moved: adapt dimse/"
    # None between messages: direct_receive reads a PDU itself only then
    assert hasattr(assoc.dimse, "message") and assoc.dimse.message is None, "the message in progress moved: adapt dimse/"
    assert hasattr(assoc.requestor, "maximum_length") and hasattr(assoc.dul, "assoc")
    assert callable(getattr(assoc.acse, "send_reject", None))


def test_the_reactor_sleeps_are_the_ones_the_reactor_recognises() -> None:
    """reactor._reactor_sleep tells pynetdicom's sleeps apart by their length."""
    from dimse import reactor

    assert f"time.sleep({reactor.IDLE_POLL})" in inspect.getsource(Association._run_reactor)
    assert f"time.sleep({reactor.KILL_RETRY})" in inspect.getsource(Association.kill)
    assert "time.sleep(self._run_loop_delay)" in inspect.getsource(DULServiceProvider.run_reactor)


def test_a_rejected_or_timed_out_acceptor_still_closes_its_socket() -> None:
    """server.PeerConnections frees a slot when the socket is closed: pynetdicom's acceptor closes
    it when no A-ASSOCIATE-RQ came within the ACSE timeout and when the association ends."""
    source = inspect.getsource(Association.run_reactor)
    assert "receive_pdu(wait=True, timeout=self.acse_timeout)" in source and "shutdown_request" in source


def test_the_ae_keeps_its_servers_where_shutdown_finds_them() -> None:
    ae = ApplicationEntity()
    assert isinstance(ae._servers, list)
    assert "_servers" in inspect.getsource(ApplicationEntity.shutdown)


def test_install_refuses_a_version_it_was_not_written_for() -> None:
    with pytest.raises(dimse.UnsupportedPynetdicom) as refused:
        dimse.check_version("9.9.9")
    message = str(refused.value)
    assert "9.9.9" in message and all(v in message for v in dimse.SUPPORTED_PYNETDICOM)


def test_the_installed_version_is_supported_and_install_is_repeatable() -> None:
    assert pynetdicom.__version__ in dimse.SUPPORTED_PYNETDICOM
    dimse.install()
    dimse.install()
    from dimse import reactor, relayed_move, store_responses

    assert pynetdicom.association.DULServiceProvider is reactor.BusyAwareDUL
    assert pynetdicom.association.DIMSEServiceProvider is store_responses.StoreResponses
    dimse.install(receiving=True)
    assert pynetdicom.association.uid_to_service_class("1.2.840.10008.5.1.4.1.2.2.2") is relayed_move.RelayedMoveService
