"""Lifecycle rules (settings `lifecycle_rules`): which studies (tenant, QIDO study keys), when (days
after their last receipt or their StudyDate) and what: `compress` to a lossless syntax, `tier` to the cold blob store, or `delete`
(retention, recorded as an IOCM 113039 Data Retention Policy Expired rejection)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field, model_validator
from pydicom.uid import JPEG2000Lossless, JPEGLSLossless

from archive.config.rule_fields import RuleName, StudyMatch

SYNTAXES = {"jpeg2000-lossless": str(JPEG2000Lossless), "jpegls-lossless": str(JPEGLSLossless)}  # never lossy


class LifecycleRule(BaseModel):
    model_config = {"extra": "forbid", "populate_by_name": True}

    name: RuleName
    tenant: str | None = None  # None: every tenant
    match: StudyMatch = Field(default_factory=dict)
    after_days: float = Field(ge=0)
    counted_from: Literal["received", "study_date"] = Field("received", alias="from")
    action: Literal["compress", "delete", "tier"]
    syntax: Literal["jpeg2000-lossless", "jpegls-lossless"] | None = None

    @model_validator(mode="after")
    def _action_needs(self) -> "LifecycleRule":
        if self.action == "compress" and self.syntax is None:
            raise ValueError(
                f'lifecycle rule {self.name!r} compresses: say to what, syntax = "jpeg2000-lossless" or "jpegls-lossless"'
            )
        if self.action != "compress" and self.syntax is not None:
            raise ValueError(f"lifecycle rule {self.name!r} does {self.action}: a syntax means nothing to it")
        return self

    def applies_to(self, tenant: str) -> bool:
        return self.tenant in (None, tenant)

    @property
    def transfer_syntax(self) -> str | None:
        return SYNTAXES[self.syntax] if self.syntax else None
