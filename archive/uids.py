"""DICOM UID rules (PS3.5 9.1): digits and dots, no leading zeros in a component, at most 64 chars."""

from __future__ import annotations

import re

_UID = re.compile(r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))+$")


def is_valid_uid(value: object) -> bool:
    return isinstance(value, str) and len(value) <= 64 and bool(_UID.match(value))


def uid_problem(name: str, value: object) -> str | None:
    """A sentence saying what is wrong with a UID attribute, or None when it is fine."""
    if value is None or value == "":
        return f"{name} is missing"
    if not is_valid_uid(value):
        shown = str(value)[:80]
        return f"{name} {shown!r} is not a valid UID (digits and dots, at most 64 characters)"
    return None
