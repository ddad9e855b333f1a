"""How `DICOMFLOW_*` environment variables become setting values.

One variable per flat key (archive/config/flat_keys.py): `DICOMFLOW_DIMSE_PORT` sets `dimse.port`.
pydantic-settings reads every list- or table-valued variable as JSON, so the form a person writes,
`DICOMFLOW_OIDC_ISSUER=https://idp.example`, failed at start with a parser message naming no
variable. Here a list may also be written as comma-separated words, and a value that is neither
says which variable is wrong and what form it expects.
"""

from __future__ import annotations

import json
import os
import typing
from typing import Any

from pydantic import BaseModel
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource

from archive.config.flat_keys import field_info, flat_keys, nest


class EnvSettingError(ValueError):
    """A `DICOMFLOW_*` variable could not be read; the message names it and the expected form."""


def _is_list(annotation: Any) -> bool:
    if typing.get_origin(annotation) in (list, tuple, set):
        return True
    return any(_is_list(arg) for arg in typing.get_args(annotation) if arg is not type(None))


def _is_table(annotation: Any) -> bool:
    if typing.get_origin(annotation) is dict or (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
        return True
    return any(_is_table(arg) for arg in typing.get_args(annotation) if arg is not type(None))


def comma_separated(value: str) -> list[str]:
    return [word.strip() for word in value.split(",") if word.strip()]


def env_value(variable: str, annotation: Any, text: str) -> Any:
    """A variable's text as the setting takes it: JSON where JSON is written, a plain or
    comma-separated value for a list, the text itself for a scalar (pydantic converts it)."""
    if _is_list(annotation):
        if text.strip().startswith("["):
            return _json(variable, text, 'a JSON list such as ["a", "b"]')
        return comma_separated(text)
    if _is_table(annotation):
        return _json(variable, text, 'a JSON object such as {"NAME": {"host": "10.0.0.5", "port": 104}}')
    return text


def _json(variable: str, text: str, form: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise EnvSettingError(f"{variable} is not valid ({err.msg} at character {err.pos}): write {form}") from None


class FlatEnvSource(PydanticBaseSettingsSource):
    """`DICOMFLOW_<FLAT KEY>` (any case) for every flat key, nested into sections."""

    def __init__(self, settings_cls: type[BaseSettings], prefix: str) -> None:
        super().__init__(settings_cls)
        self.prefix = prefix

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False  # __call__ reads every variable itself

    def __call__(self) -> dict[str, Any]:
        environment = {name.lower(): value for name, value in os.environ.items()}
        found: dict[str, Any] = {}
        for key in flat_keys(self.settings_cls):
            text = environment.get(f"{self.prefix}{key}".lower())
            if text is not None:
                variable = f"{self.prefix}{key}".upper()
                found[key] = env_value(variable, field_info(self.settings_cls, key).annotation, text)
        return nest(found, self.settings_cls)


class NestedSource(PydanticBaseSettingsSource):
    """Another source's values (keyword arguments, the TOML file) with flat keys put in sections."""

    def __init__(self, settings_cls: type[BaseSettings], inner: PydanticBaseSettingsSource) -> None:
        super().__init__(settings_cls)
        self.inner = inner

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        return nest(self.inner(), self.settings_cls)
