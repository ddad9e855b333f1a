"""Forwarding rules: which studies go where. A rule is data (settings seed it); whether a study
matches is a QIDO-RS study query (archive/query), so a rule's `match` means exactly what the same
keys mean to a viewer's search: wildcards, lists, date ranges, ModalitiesInStudy."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from psycopg_pool import AsyncConnectionPool
from pydantic import BaseModel, Field, field_validator, model_validator

from archive.config.rule_fields import RuleName, StudyMatch
from archive.identity.tenants import check_tenant
from archive.query.attributes import BY_KEYWORD
from archive.query.builder import MatchKey, QuerySpec, build
from archive.query.retrieve import MAX_INSTANCES
from archive.query.study_match import study_matches as matches_keys


class ForwardTarget(BaseModel):
    """Where a rule sends: an AE-table entry (C-STORE), a DICOMweb service (STOW-RS) with an
    OAuth2 client-credentials token when it wants one, or another tenant of this archive (a copy
    received there as any object is: stored, indexed, processed by its own study workflow)."""

    model_config = {"extra": "forbid"}

    ae: str | None = Field(None, min_length=1, max_length=16)  # an AE-table entry with host and port
    stow: str | None = None  # the DICOMweb root, e.g. https://pacs.example/dicomweb: POSTed to {stow}/studies
    token_url: str | None = None
    client_id: str | None = None
    client_secret_file: Path | None = None  # a 0600 file, never the secret itself in the settings
    ca_file: Path | None = None  # the CA the STOW server's certificate chains to, when not the system's
    tenant: str | None = None  # another tenant of this archive: a copy through receipt, no network in between
    max_associations: int = Field(2, ge=1, le=64)  # forwards sending to it at once, across every worker

    @field_validator("tenant")
    @classmethod
    def _safe_tenant(cls, value: str | None) -> str | None:
        return None if value is None else check_tenant(value)

    @model_validator(mode="after")
    def _one_destination(self) -> "ForwardTarget":
        if [self.ae, self.stow, self.tenant].count(None) != 2:
            raise ValueError(
                'a forward goes to one place: to = { ae = "NAME" }, to = { stow = "https://host/dicomweb" } or to = { tenant = "name" }'
            )
        if self.stow is not None and not self.stow.startswith(("https://", "http://")):
            raise ValueError(f"stow must be an http(s) URL, not {self.stow!r}")
        if self.token_url and not (self.client_id and self.client_secret_file):
            raise ValueError("token_url needs client_id and client_secret_file (OAuth2 client credentials)")
        return self

    @property
    def kind(self) -> Literal["dimse", "stow", "tenant"]:
        return "dimse" if self.ae else "tenant" if self.tenant else "stow"

    @property
    def destination(self) -> str:
        """How the index names this destination (what it acknowledged, /metrics' label)."""
        return self.ae or (f"tenant:{self.tenant}" if self.tenant else f"stow:{self.stow}")


class ForwardRule(BaseModel):
    model_config = {"extra": "forbid"}

    name: RuleName
    tenant: str | None = None  # None: every tenant
    # "study": once the study is stable and processed; "instance": as soon as its instances are
    # stored (each receipt batch, about a second), for the AI service that wants them at once
    when: Literal["study", "instance"] = "study"
    match: StudyMatch = Field(default_factory=dict)  # QIDO keys on the study; empty sends everything
    to: ForwardTarget
    deidentify: Literal["basic"] | None = None  # PS3.15 Basic Profile, new UIDs consistent per destination

    @model_validator(mode="after")
    def _copies_between_two_tenants(self) -> "ForwardRule":
        target = self.to.tenant
        if target is not None and self.tenant is None:
            raise ValueError(
                f"a copy into tenant {target!r} needs the rule's own tenant (a rule for every tenant would copy {target!r} into itself)"
            )
        if target is not None and target == self.tenant:
            raise ValueError(f"forward rule {self.name!r} would copy tenant {target!r} into itself")
        return self

    def applies_to(self, tenant: str) -> bool:
        return self.tenant in (None, tenant)


async def study_matches(pool: AsyncConnectionPool, rule: ForwardRule, tenant: str, study_uid: str) -> bool:
    return await matches_keys(pool, rule.match, tenant, study_uid)


def requester(rule: str) -> str:
    """How a forward's retrieves are recorded (retrieve.requested_by): what tells them from C-MOVEs."""
    return f"forward:{rule}"


def owed_instances(tenant: str, study_uid: str, requested_by: str, destination: str) -> tuple[str, list[Any]]:
    """A SELECT of the study's SOP Instance UIDs, in the order a retrieve sends them, but those an
    earlier forward by the same rule to the same destination got acknowledged (sent, or refused
    for good: a destination's refusal is not retried by sending again)."""
    keys = [MatchKey(BY_KEYWORD["StudyInstanceUID"], study_uid)]
    query = build(QuerySpec("instance", tenant, keys, [BY_KEYWORD["SOPInstanceUID"]], limit=MAX_INSTANCES))
    sql = f"""SELECT q.sop_uid FROM ({query.sql}) AS q
              WHERE NOT EXISTS (SELECT 1 FROM retrieve_item ri JOIN retrieve r ON r.id = ri.retrieve_id
                                WHERE r.tenant = %s AND r.requested_by = %s AND r.destination = %s
                                  AND ri.sop_uid = q.sop_uid AND ri.state <> 'pending')"""
    return sql, [*query.params, tenant, requested_by, destination]
