"""HL7 v2 ADT messages as the archive's update orders, read with the `hl7` library (never a
hand-written parser): A08 and A31 update a patient's demographics, A40 merges a prior patient into
a surviving one, A47 gives a patient a new identifier. PID carries the new values, MRG-1 the prior
identifier; what cannot be applied is refused with an ACK saying why."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import hl7

from archive.corrections.changes import BadChange, Changes

EVENTS = {"A08": "update", "A31": "update", "A40": "merge", "A47": "new identifier"}
_SEXES = {"M": "M", "F": "F", "O": "O"}  # HL7 table 0001 to DICOM; U, A and N leave the value alone
MAX_TEXT = 80  # MSA-3 is ST 80 in v2.5


class Refused(Exception):
    """The message is not applied; `code` is the ACK's: AR (rejected: do not resend as is) or AE."""

    def __init__(self, code: str, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


@dataclass(frozen=True)
class AdtOrder:
    event: str  # A08 | A31 | A40 | A47
    control_id: str  # MSH-10
    patient_id: str  # whose studies change: PID-3 for an update, MRG-1 (the prior one) otherwise
    changes: Changes


def _part(segment: Any, field: int, component: int = 1) -> str:
    """Component `component` of the first repetition of a field, "" when absent (the library
    gives a plain field as a string, a composite one as nested containers: both print the same)."""
    try:
        text = str(segment(field))
    except (IndexError, KeyError, TypeError):
        return ""
    components = text.split("~")[0].split("^")
    return components[component - 1].strip() if component <= len(components) else ""


def sending_facility(message: hl7.Message) -> str:
    return _part(message.segment("MSH"), 4)


def adt_order(message: hl7.Message) -> AdtOrder:
    msh = message.segment("MSH")
    event, control_id = _part(msh, 9, 2), _part(msh, 10)
    if _part(msh, 9, 1) != "ADT" or event not in EVENTS:
        raise Refused("AR", f"unsupported message type {_part(msh, 9)}^{event}: ADT A08, A31, A40, A47 only")
    if not control_id:
        raise Refused("AR", "MSH-10 (message control ID) is empty")
    pid = _segment(message, "PID")
    current = _part(pid, 3)
    if not current:
        raise Refused("AE", "PID-3 (patient identifier) is empty")
    values = _demographics(pid)
    if event in ("A40", "A47"):
        prior = _part(_segment(message, "MRG"), 1)
        if not prior:
            raise Refused("AE", "MRG-1 (prior patient identifier) is empty")
        if prior == current:
            raise Refused("AE", f"MRG-1 and PID-3 name the same patient {prior}")
        values["PatientID"], current = current, prior
    try:
        return AdtOrder(event, control_id[:64], current, Changes.of(values))
    except BadChange as err:
        raise Refused("AE", str(err)) from None


def _segment(message: hl7.Message, name: str) -> Any:
    try:
        return message.segment(name)
    except KeyError:
        raise Refused("AE", f"the message has no {name} segment") from None


def _demographics(pid: Any) -> dict[str, str]:
    """PID-5 (XPN: family^given^middle^suffix^prefix) as a DICOM PN (family^given^middle^prefix^suffix),
    PID-7's date, PID-8 mapped to DICOM's sexes; what the message leaves empty is not changed."""
    values: dict[str, str] = {}
    family, given, middle, suffix, prefix = (_part(pid, 5, n) for n in range(1, 6))
    name = "^".join((family, given, middle, prefix, suffix)).rstrip("^")
    if name:
        values["PatientName"] = name
    birth = _part(pid, 7)[:8]
    if birth:
        values["PatientBirthDate"] = birth
    sex = _SEXES.get(_part(pid, 8).upper())
    if sex:
        values["PatientSex"] = sex
    return values


def ack(message: hl7.Message, code: str, text: str = "") -> str:
    """The original-mode ACK for `message` (MSA-1 `code`, MSA-3 `text`)."""
    answer = message.create_ack(code)
    if text:
        answer.segment("MSA").assign_field(text.replace("|", "/").replace("^", " ")[:MAX_TEXT], 3)
    return str(answer)
