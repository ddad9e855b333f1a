"""Lifecycle rules (settings `lifecycle_rules`): which studies (tenant, QIDO study keys), when (days
after their last receipt or their StudyDate) and what: `compress` to a lossless syntax, or `delete`
(retention, recorded as an IOCM 113039 Data Retention Policy Expired rejection)."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, Field, field_validator, model_validator
from pydicom.uid import JPEG2000Lossless, JPEGLSLossless

from archive.query.study_match import check_study_keys

SYNTAXES = {"jpeg2000-lossless": str(JPEG2000Lossless), "jpegls-lossless": str(JPEGLSLossless)}  # never lossy
_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,39}$")


class LifecycleRule(BaseModel):
    model_config = {"extra": "forbid", "populate_by_name": True}

    name: str
    tenant: str | None = None  # None: every tenant
    match: dict[str, str] = Field(default_factory=dict)
    after_days: float = Field(ge=0)
    counted_from: Literal["received", "study_date"] = Field("received", alias="from")
    action: Literal["compress", "delete", "tier"]
    syntax: Literal["jpeg2000-lossless", "jpegls-lossless"] | None = None

    @field_validator("name")
    @classmethod
    def _safe_name(cls, value: str) -> str:
        if not _NAME.match(value):
            raise ValueError("a rule name is 1-40 lower-case letters, digits and hyphens")
        return value

    @field_validator("match")
    @classmethod
    def _known_keys(cls, value: dict[str, str]) -> dict[str, str]:
        return check_study_keys(value)

    @model_validator(mode="after")
    def _action_needs(self) -> "LifecycleRule":
        if self.action == "tier":
            raise ValueError(f"lifecycle rule {self.name!r}: action 'tier' (a cold blob store) is not built yet")
        if self.action == "compress" and self.syntax is None:
            raise ValueError(
                f'lifecycle rule {self.name!r} compresses: say to what, syntax = "jpeg2000-lossless" or "jpegls-lossless"'
            )
        if self.action == "delete" and self.syntax is not None:
            raise ValueError(f"lifecycle rule {self.name!r} deletes: a syntax means nothing to it")
        return self

    def applies_to(self, tenant: str) -> bool:
        return self.tenant in (None, tenant)

    @property
    def transfer_syntax(self) -> str | None:
        return SYNTAXES[self.syntax] if self.syntax else None
