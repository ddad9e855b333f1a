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


def is_safe_uid(value: object) -> bool:
    """Not a conformant UID perhaps, but harmless to store, index and put in a URL: 1-64 printable
    ASCII characters, no slash, backslash or '..' (a real scanner's 64-hex-digit Study UID is one)."""
    return (
        isinstance(value, str)
        and 0 < len(value) <= 64
        and all(0x21 <= ord(c) <= 0x7E for c in value)
        and "/" not in value
        and "\\" not in value
        and ".." not in value
    )


def lenient_uid_problem(name: str, value: object) -> tuple[str | None, str | None]:
    """(refusal, non-conformance): a refusal for an unsafe or missing UID; for a safe one that breaks
    PS3.5, a note that it was stored anyway."""
    problem = uid_problem(name, value)
    if problem is None:
        return None, None
    if value not in (None, "") and is_safe_uid(value):
        return None, problem
    return problem.replace("(digits and dots", "nor safe to keep (printable ASCII, no / or \\ or '..'; digits and dots"), None
