"""ADT messages as update orders (actors/hl7_adt.py), parsed by the hl7 library: what each event
changes, and the refusals a sender can act on."""

from __future__ import annotations

import hl7
import pytest

from actors.hl7_adt import Refused, ack, adt_order, sending_facility


def _message(event: str, pid: str, mrg: str | None = None, control: str = "C1") -> hl7.Message:
    segments = [f"MSH|^~\\&|PAS|GENHOSP^1.2.3^ISO|DF|RAD|20261207||ADT^{event}^ADT_A39|{control}|P|2.5", f"EVN|{event}", pid]
    return hl7.parse("\r".join(segments + ([mrg] if mrg else [])) + "\r")


def test_a40_moves_the_prior_patient_to_the_surviving_one_with_its_demographics() -> None:
    message = _message("A40", "PID|||NEW-1^^^H^MR~ALT-9||Doe^Jane^Q^Jr^Dr||19800102123000|F", "MRG|OLD-17^^^H^MR")
    order = adt_order(message)
    assert sending_facility(message) == "GENHOSP"
    assert (order.event, order.control_id, order.patient_id) == ("A40", "C1", "OLD-17")
    # XPN family^given^middle^suffix^prefix -> PN family^given^middle^prefix^suffix
    assert order.changes.values == {
        "PatientID": "NEW-1",
        "PatientName": "Doe^Jane^Q^Dr^Jr",
        "PatientBirthDate": "19800102",
        "PatientSex": "F",
    }


def test_a08_updates_the_named_patient_and_leaves_unknown_values_alone() -> None:
    order = adt_order(_message("A08", "PID|||P-5||Roe^Rick|||U"))
    assert order.patient_id == "P-5" and order.changes.values == {"PatientName": "Roe^Rick"}


@pytest.mark.parametrize(
    ("event", "pid", "mrg", "code", "reason"),
    [
        ("A01", "PID|||P-5||Roe", None, "AR", "unsupported message type"),
        ("A40", "PID|||P-5||Roe", None, "AE", "no MRG segment"),
        ("A47", "PID|||P-5||Roe", "MRG|P-5", "AE", "same patient"),
        ("A08", "PID|||||Roe", None, "AE", "PID-3"),
        ("A08", "PID|||P-5||" + "x" * 70, None, "AE", "PatientName"),
        ("A08", "PID|||P-5||Roe||1980-01-02", None, "AE", "PatientBirthDate"),
    ],
)
def test_what_cannot_apply_is_refused_with_a_reason(event: str, pid: str, mrg: str | None, code: str, reason: str) -> None:
    with pytest.raises(Refused) as refused:
        adt_order(_message(event, pid, mrg))
    assert refused.value.code == code and reason in refused.value.reason


def test_the_ack_answers_the_message_and_carries_the_reason() -> None:
    answer = hl7.parse(ack(_message("A08", "PID|||P-5"), "AE", "bad | value ^ here"))
    assert str(answer.segment("MSH")(9)) == "ACK^A08^ACK"
    assert [str(answer.segment("MSA")(n)) for n in (1, 2, 3)] == ["AE", "C1", "bad / value   here"]
