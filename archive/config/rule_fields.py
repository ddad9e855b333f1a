"""Fields every kind of rule (forwarding, lifecycle) shares, checked the same way: a name that may
appear in workflow ids, and a `match` of QIDO study keys."""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import AfterValidator

from archive.query.study_match import check_study_keys

_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,39}$")


def _rule_name(value: str) -> str:
    if not _NAME.match(value):
        raise ValueError("a rule name is 1-40 lower-case letters, digits and hyphens (it appears in workflow ids)")
    return value


RuleName = Annotated[str, AfterValidator(_rule_name)]
StudyMatch = Annotated[dict[str, str], AfterValidator(check_study_keys)]
