"""Where an instance is on its way from receipt to ready. The index's CHECK constraint (migrations
15 and 19) holds the same list, so a misspelt state in a statement fails loudly instead of hiding a row."""

from __future__ import annotations

from enum import StrEnum


class InstanceState(StrEnum):
    RECEIVED = "received"  # bytes fsync'd and the row committed: acknowledged, visible to QIDO
    STORED = "stored"  # taken by the study workflow's store step
    VERIFIED = "verified"  # read back and checked against the receipt's digest
    COMMITTED = "committed"  # safe to report in a storage commitment, served everywhere
    FAILED = "failed"  # a step refused it for good; failure_reason says why
    REJECTED = "rejected"  # withdrawn by an IOCM rejection note (archive/index/rejections.py); kept until it expires


# what no read path serves: every query, count and retrieve filters on this one list
UNSERVED: tuple[InstanceState, ...] = (InstanceState.FAILED, InstanceState.REJECTED)


def served(alias: str = "") -> str:
    """SQL: the instance row (of table alias `alias`) is served to readers."""
    column = f"{alias}.state" if alias else "state"
    listed = ", ".join(f"'{state.value}'" for state in UNSERVED)
    return f"{column} NOT IN ({listed})"


def check_constraint_sql() -> str:
    """The CHECK constraint over every state (migration 19 re-adds it with 'rejected')."""
    listed = ", ".join(f"'{state.value}'" for state in InstanceState)
    return f"ALTER TABLE instance ADD CONSTRAINT instance_state_known CHECK (state IN ({listed}))"
