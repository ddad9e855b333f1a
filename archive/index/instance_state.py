"""Where an instance is on its way from receipt to ready. The index's CHECK constraint (migration
15) holds the same list, so a misspelt state in a statement fails loudly instead of hiding a row."""

from __future__ import annotations

from enum import StrEnum


class InstanceState(StrEnum):
    RECEIVED = "received"  # bytes fsync'd and the row committed: acknowledged, visible to QIDO
    STORED = "stored"  # taken by the study workflow's store step
    VERIFIED = "verified"  # read back and checked against the receipt's digest
    COMMITTED = "committed"  # safe to report in a storage commitment, served everywhere
    FAILED = "failed"  # a step refused it for good; failure_reason says why


def check_constraint_sql() -> str:
    """The CHECK constraint as migration 15 adds it."""
    listed = ", ".join(f"'{state.value}'" for state in InstanceState)
    return f"ALTER TABLE instance ADD CONSTRAINT instance_state_known CHECK (state IN ({listed}))"
