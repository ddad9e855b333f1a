"""Storage commitment (PS3.4 J): which referenced instances the archive holds committed, which it
failed, and which are still on their way. One answer for whoever reports: the commitment
workflow on a new association, or the SCP on the requester's still-open one.

An instance received but not yet verified is waited for, up to `commitment_timeout_seconds`. One
the archive has no record of is waited for only `commitment_unknown_grace_seconds` after the
N-ACTION (the one real race: its C-STORE still arriving on another association), then reported
failed with 0112: a modality keeps a study on its disk until it is committed, and one image that
never arrived must not hold the whole study's report for an hour."""

from __future__ import annotations

from dataclasses import dataclass, field

from psycopg_pool import AsyncConnectionPool
from pydicom.dataset import Dataset

from archive.dicom.dicom_status import CLASS_INSTANCE_CONFLICT, PROCESSING_FAILURE
from archive.dicom.dicom_status import NO_SUCH_OBJECT_INSTANCE as NO_SUCH_OBJECT
from archive.index import commitments
from archive.index.instance_state import InstanceState

Ref = tuple[str, str]  # (SOP Class UID, SOP Instance UID)
FailedRef = tuple[str, str, int]  # ... and the Failure Reason sent back


@dataclass
class Classified:
    row: commitments.CommitmentRow
    committed: list[Ref] = field(default_factory=list)
    failed: list[FailedRef] = field(default_factory=list)
    pending: list[str] = field(default_factory=list)
    unknown_wait: float = 0.0  # seconds until the grace for never-received instances ends (0: none waiting)


class UnknownTransaction(LookupError):
    pass


async def classify(pool: AsyncConnectionPool, tenant: str, transaction_uid: str, final: bool, unknown_grace: float) -> Classified:
    """`final`: what is still pending counts as failed (the request timed out). `unknown_grace`:
    seconds after the N-ACTION a reference the archive has no record of still counts as pending."""
    row = await commitments.load_request(pool, tenant, transaction_uid)
    if row is None:
        raise UnknownTransaction(transaction_uid)
    states = await commitments.instance_states(pool, tenant, [i for _, i in row.refs])
    out = Classified(row)
    grace_left = max(0.0, unknown_grace - row.age_seconds)
    for sop_class, sop_uid in row.refs:
        state, stored_class = states.get(sop_uid, (None, None))
        if state == InstanceState.COMMITTED and stored_class == sop_class:
            out.committed.append((sop_class, sop_uid))
        elif state == InstanceState.COMMITTED:
            out.failed.append((sop_class, sop_uid, CLASS_INSTANCE_CONFLICT))
        elif state == InstanceState.FAILED:
            out.failed.append((sop_class, sop_uid, PROCESSING_FAILURE))
        elif state is None and (final or not grace_left):
            out.failed.append((sop_class, sop_uid, NO_SUCH_OBJECT))
        elif final:
            out.failed.append((sop_class, sop_uid, PROCESSING_FAILURE))
        else:
            out.pending.append(sop_uid)
            if state is None:
                out.unknown_wait = grace_left
    return out


def report_dataset(transaction_uid: str, committed: list[Ref], failed: list[FailedRef]) -> Dataset:
    """The N-EVENT-REPORT's Event Information (PS3.4 J.3.3): type 1 if nothing failed, else 2."""
    ds = Dataset()
    ds.TransactionUID = transaction_uid
    if committed:
        ds.ReferencedSOPSequence = [_ref(c, i) for c, i in committed]
    if failed:
        ds.FailedSOPSequence = [_ref(c, i, reason) for c, i, reason in failed]
    return ds


def _ref(sop_class: str, sop_instance: str, reason: int | None = None) -> Dataset:
    item = Dataset()
    item.ReferencedSOPClassUID = sop_class
    item.ReferencedSOPInstanceUID = sop_instance
    if reason is not None:
        item.FailureReason = reason
    return item
