"""How `DICOMFLOW_*` environment variables become setting values.

pydantic-settings reads every list- or table-valued variable as JSON, so the form a person writes,
`DICOMFLOW_OIDC_ISSUER=https://idp.example`, failed at start with a parser message naming no
variable. Here a list may also be written as comma-separated words, and a value that is neither
says which variable is wrong and what form it expects.
"""

from __future__ import annotations

import json
import typing
from typing import Any

from pydantic.fields import FieldInfo
from pydantic_settings import EnvSettingsSource


class EnvSettingError(ValueError):
    """A `DICOMFLOW_*` variable could not be read; the message names it and the expected form."""


def _is_list(annotation: Any) -> bool:
    if typing.get_origin(annotation) in (list, tuple, set):
        return True
    return any(_is_list(arg) for arg in typing.get_args(annotation) if arg is not type(None))


def comma_separated(value: str) -> list[str]:
    return [word.strip() for word in value.split(",") if word.strip()]


class LenientEnvSource(EnvSettingsSource):
    """JSON where JSON is written; a plain or comma-separated value for a list."""

    def decode_complex_value(self, field_name: str, field: FieldInfo, value: Any) -> Any:
        variable = f"{self.env_prefix}{field_name}".upper()
        if not isinstance(value, str):
            return value
        text = value.strip()
        if _is_list(field.annotation):
            if text.startswith("["):
                return self._json(variable, text, 'a JSON list such as ["a", "b"]')
            return comma_separated(text)
        return self._json(variable, text, 'a JSON object such as {"NAME": {"host": "10.0.0.5", "port": 104}}')

    @staticmethod
    def _json(variable: str, text: str, form: str) -> Any:
        try:
            return json.loads(text)
        except json.JSONDecodeError as err:
            raise EnvSettingError(f"{variable} is not valid ({err.msg} at character {err.pos}): write {form}") from None
