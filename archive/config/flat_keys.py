"""Flat keys, the form every settings file and `DICOMFLOW_*` variable has used, into sections.

`dimse_port = 104` in a file, `DICOMFLOW_DIMSE_PORT=104` and `Settings(dimse_port=104)` all mean
`settings.dimse.port`; a file may also write the section as a table (`[dimse]` then `port = 104`).
Every source is nested before pydantic-settings merges them, so a variable still beats the file
whichever form each uses.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel
from pydantic.fields import FieldInfo


@functools.cache
def flat_keys(root: type[BaseModel]) -> dict[str, tuple[str | None, str]]:
    """Every flat key of `root`'s settings -> (section, field), in declaration order."""
    keys: dict[str, tuple[str | None, str]] = {}
    for name, field in root.model_fields.items():
        section = _section_model(field)
        if section is None:
            keys[name] = (None, name)
            continue
        for inner, inner_field in section.model_fields.items():
            keys[inner_field.alias or inner] = (name, inner)
    return keys


def field_info(root: type[BaseModel], key: str) -> FieldInfo:
    """The field a flat key names (its annotation says how to read it from the environment)."""
    section, name = flat_keys(root)[key]
    if section is None:
        return root.model_fields[name]
    model = _section_model(root.model_fields[section])
    assert model is not None
    return model.model_fields[name]


def nest(data: Mapping[str, Any], root: type[BaseModel]) -> dict[str, Any]:
    """Flat keys into their sections; a section given as a table is kept, and a flat key given
    beside it wins (an override applied to a dumped settings object)."""
    keys = flat_keys(root)
    out: dict[str, Any] = {}
    for key, value in data.items():
        if key in root.model_fields and _section_model(root.model_fields[key]) and isinstance(value, Mapping):
            out[key] = {**out.get(key, {}), **value}
    for key, value in data.items():
        section, name = keys.get(key, (None, key))
        if section is not None:
            out[section] = {**out.get(section, {}), name: value}
        elif key not in out:
            out[key] = value
    return out


def flat_name(root: type[BaseModel], loc: tuple[int | str, ...]) -> str:
    """The flat key a validation error's location names (`("dimse", "port")` -> `dimse_port`)."""
    if len(loc) >= 2 and isinstance(loc[0], str) and isinstance(loc[1], str):
        for key, place in flat_keys(root).items():
            if place == (loc[0], loc[1]):
                return ".".join([key, *(str(p) for p in loc[2:])])
    return ".".join(str(p) for p in loc) or "?"


def _section_model(field: FieldInfo) -> type[BaseModel] | None:
    annotation = field.annotation
    if isinstance(annotation, type) and issubclass(annotation, BaseModel) and annotation.__name__.endswith("Settings"):
        return annotation
    return None


def flat_value(settings: BaseModel, key: str) -> Any:
    """The value a flat key has in a settings object (`dimse_port` -> `settings.dimse.port`)."""
    section, name = flat_keys(type(settings))[key]
    return getattr(getattr(settings, section) if section else settings, name)
