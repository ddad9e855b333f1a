"""Pending C-FIND responses sent from a cached command set are the bytes pynetdicom sends itself."""

from __future__ import annotations

from io import BytesIO

import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pynetdicom.dimse_messages import C_FIND_RSP
from pynetdicom.dimse_primitives import C_FIND
from pynetdicom.dsutils import encode

from dimse.find_responses import command_set, message_pdus


def _pending(identifier: bytes, status: int = 0xFF00) -> C_FIND:
    rsp = C_FIND()
    rsp.MessageIDBeingRespondedTo = 7
    rsp.AffectedSOPClassUID = "1.2.840.10008.5.1.4.1.2.2.1"
    rsp.Status = status
    rsp.Identifier = BytesIO(identifier)
    return rsp


def _pdvs(pdus) -> list[tuple[int, bytes]]:
    return [pdv for pdata in pdus for pdv in pdata.presentation_data_value_list]


@pytest.mark.parametrize("max_pdu", [0, 16384, 64, 13])
@pytest.mark.parametrize("status", [0xFF00, 0xFF01])
def test_same_presentation_data_as_pynetdicom(max_pdu, status):
    # a real object's header as the identifier: long enough to need fragments at small PDU sizes
    ds = dcmread(get_testdata_file("CT_small.dcm"), stop_before_pixels=True)
    identifier = encode(ds, True, True)
    assert identifier
    primitive = _pending(identifier, status)
    theirs = C_FIND_RSP()
    theirs.primitive_to_message(primitive)
    expected = _pdvs(theirs.encode_msg(3, max_pdu))
    assert _pdvs(message_pdus(3, command_set(primitive), identifier, max_pdu)) == expected
    assert len(expected) > 2 or max_pdu in (0, 16384)
