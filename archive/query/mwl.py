"""Modality Worklist C-FIND (PS3.4 K): the identifier's keys, top level and inside the Scheduled
Procedure Step Sequence (sequence matching, C.2.2.2.6), become the one query builder's keys over
the worklist; each answer is the stored item cut down to the keys asked for."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydicom.dataset import Dataset

from archive.query.attributes import SPS, WORKLIST_BY_TAG, Attribute
from archive.query.builder import BadQuery, MatchKey, Query, QuerySpec, build
from archive.query.cfind import asked_character_set, set_character_set, skipped

WORKLIST_FIND = "1.2.840.10008.5.1.4.31"  # Modality Worklist Information Model - FIND
_ITEM = Attribute("", "WorklistItem", "", "worklist", "w.item", "json")  # the stored item (DICOM JSON)


@dataclass
class WorklistRequest:
    query: Query
    requested: Dataset
    character_set: list[str]


def _value(element: Any) -> str:
    value = element.value
    if value is None:
        return ""
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        return "\\".join(str(v) for v in value)
    return str(value)


def _keys(dataset: Dataset, within: str | None) -> list[MatchKey]:
    keys = []
    for element in dataset:
        if skipped(element):
            continue
        if element.keyword == SPS and within is None:
            if element.VR != "SQ" or len(element.value) > 1:
                raise BadQuery("ScheduledProcedureStepSequence must hold at most one item")
            keys += _keys(element.value[0], SPS) if len(element.value) else []
            continue
        attribute = WORKLIST_BY_TAG.get((within, f"{int(element.tag):08X}"))
        if attribute is not None:
            keys.append(MatchKey(attribute, _value(element)))
    return keys


def parse_worklist_identifier(identifier: Dataset, tenant: str) -> WorklistRequest:
    query = build(QuerySpec("worklist", tenant, _keys(identifier, None), [_ITEM]))
    return WorklistRequest(query, identifier, asked_character_set(identifier))


def _cut(requested: Dataset, stored: Dataset, texts: list[str]) -> Dataset:
    """`stored` with only the keys `requested` names (zero-length where it has none), recursively."""
    out = Dataset()
    for element in requested:
        if skipped(element):
            continue
        if element.tag not in stored:
            out.add_new(element.tag, element.VR, [] if element.VR == "SQ" else None)
            continue
        have = stored[element.tag]
        if have.VR == "SQ" and element.VR == "SQ":
            template = element.value[0] if len(element.value) and len(element.value[0]) else None
            out.add_new(element.tag, "SQ", [_cut(template, item, texts) if template is not None else item for item in have.value])
        else:
            out.add(have)
            if isinstance(have.value, str) or have.VR == "PN":
                texts.append(str(have.value))
    return out


def answer_worklist(request: WorklistRequest, row: tuple[Any, ...]) -> Dataset:
    stored = Dataset.from_json(row[[a.keyword for a in request.query.returned].index(_ITEM.keyword)])
    texts: list[str] = []
    ds = _cut(request.requested, stored, texts)
    set_character_set(ds, request.character_set, texts)
    return ds
