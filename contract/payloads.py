"""Parameters and results that cross the workflow/activity boundary. Plain dataclasses only:
workflows import this module inside the sandbox, so it must not pull in pydicom or I/O."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, timedelta


@dataclass
class StudyRef:
    tenant: str
    study_uid: str


@dataclass
class InstancesArrived:
    """Signal payload: counters, never instance lists or bytes (payloads over 2 MB are refused)."""

    count: int
    modality: str | None = None
    deleted: int = 0  # instances removed by a DELETE request
    # the sender saw the study quiet for stable_seconds (or knows it is done): process without waiting
    settled: bool = False


@dataclass
class StepResult:
    step: str
    processed: int = 0
    failed: int = 0
    detail: str = ""
    failures: list[str] = field(default_factory=list)


@dataclass
class StudyPass:
    """What one PROCESS_STUDY activity did: each step's result, and the forwarding rules told."""

    steps: list[StepResult] = field(default_factory=list)
    routed: list[str] = field(default_factory=list)
    # the study's instances in state failed after the pass (None from workers before it was counted)
    failed_in_study: int | None = None


@dataclass
class StudyParams:
    tenant: str
    study_uid: str
    stable_seconds: float = 5.0
    pending: int = 0  # carried over a continue-as-new
    total: int = 0
    modality: str | None = None
    failed: int = 0  # carried too, or a study with failures before the cut would end "complete"
    deleted: int = 0
    # which code the run follows: 1 replays the patches of workflows/study.py, 2 (every start since) has
    # them all in effect without their markers, each of which cost the history two events
    version: int = 1


@dataclass
class StudyOutcome:
    tenant: str
    study_uid: str
    instances: int
    failed: int
    state: str
    steps: list[StepResult] = field(default_factory=list)
    deleted: int = 0


@dataclass
class CommitmentRequest:
    tenant: str
    transaction_uid: str
    calling_ae: str
    timeout_seconds: float
    unknown_grace_seconds: float = 10.0  # a reference never received is failed this long after the N-ACTION


@dataclass
class CommitmentStatus:
    committed: int
    failed: int
    pending: int
    unknown_wait_seconds: float = 0.0  # when to look again for references never received (0: no such wait)


@dataclass
class CommitmentReport:
    delivered: bool
    event_type: int
    detail: str = ""


@dataclass
class RetrieveRequest:
    """A C-MOVE accepted by an SCP: the instances to send are listed in the index under `retrieve_id`."""

    tenant: str
    retrieve_id: str
    destination_ae: str
    move_originator_ae: str
    move_originator_message_id: int
    instances: int = 0  # how many the SCP listed to send (0 in moves accepted before it was said)
    deidentify: str = ""  # a forward's de-identification profile (archive/routing/deidentify.py); "" = as stored
    slots: int = 0  # a forward's bound on senders to its destination at once (archive/index/slots.py); 0 = none


@dataclass
class RetrieveOutcome:
    state: str  # done | cancelled
    completed: int
    warning: int
    failed: int


@dataclass
class RetrieveEnd:
    request: RetrieveRequest
    gave_up: str | None = None  # why what is still owed will not be sent


@dataclass
class ForwardRequest:
    """One forwarding rule's sending of one study: what is owed is listed afresh each round."""

    tenant: str
    rule: str
    study_uid: str
    destination_ae: str  # the destination as the index names it: an AE title, or stow:{url}
    deidentify: str = ""
    via: str = "dimse"  # dimse | stow | tenant (a copy into another tenant of this archive)


@dataclass
class ForwardRound:
    """What one round of a forward sent, for the audit trail."""

    request: ForwardRequest
    outcome: RetrieveOutcome
    cancelled: bool = False  # an administrator cancelled the forward during or before this round


@dataclass
class ForwardSend:
    """A round's retrieve of a forward that goes over STOW-RS (the rule says where and how)."""

    request: ForwardRequest
    retrieve: RetrieveRequest


@dataclass
class ExpiryRequest:
    """A rejection expiry run: what is due at `as_of` (ISO 8601; empty: when the run starts)."""

    as_of: str = ""


@dataclass
class ExpiryOutcome:
    studies: int = 0
    instances: int = 0


@dataclass
class UpdateRequest:
    """An update of what the archive holds: `changes` (keyword to value) applied to `study_uids`
    (a bulk update), or to every study of `patient_id` (HL7 ADT: A08/A31 update, A40 merge and
    A47 new identifier, where patient_id is the prior one)."""

    tenant: str
    operation_id: str
    kind: str  # bulk | A08 | A31 | A40 | A47
    changes: dict[str, str]
    study_uids: list[str] = field(default_factory=list)
    patient_id: str = ""


@dataclass
class UpdateStudy:
    request: UpdateRequest
    study_uid: str


@dataclass
class UpdateOutcome:
    studies: int = 0
    instances: int = 0
    status: str = "succeeded"  # succeeded | failed
    error: str = ""


@dataclass
class LifecycleRun:
    """A lifecycle run: what is due at `as_of` (ISO 8601; empty: when it starts); a dry run only lists it."""

    as_of: str = ""
    dry_run: bool = False
    concurrency: int = 2  # studies worked on at once


@dataclass
class LifecycleTask:
    rule: str
    action: str  # compress | delete


@dataclass
class LifecycleStudy:
    tenant: str
    study_uid: str
    tasks: list[LifecycleTask] = field(default_factory=list)


@dataclass
class LifecycleResult:
    studies: int = 0
    compressed: int = 0  # objects rewritten losslessly
    skipped: int = 0  # objects left as they were (no pixels, already compressed, a codec refusal)
    deleted: int = 0  # objects deleted by retention
    bytes_before: int = 0
    bytes_after: int = 0
    planned: list[str] = field(default_factory=list)  # what a dry run would do (a run: what it did)
    tiered: int = 0  # objects moved to the cold store
    bytes_tiered: int = 0

    def add(self, other: "LifecycleResult") -> None:
        self.studies += other.studies
        self.compressed += other.compressed
        self.skipped += other.skipped
        self.deleted += other.deleted
        self.bytes_before += other.bytes_before
        self.bytes_after += other.bytes_after
        self.tiered += other.tiered
        self.bytes_tiered += other.bytes_tiered


@dataclass
class MigrationCounts:
    """Studies of a migration by what became of them, and the instances the archive verified."""

    found: int = 0
    verified: int = 0
    failed: int = 0
    instances: int = 0
    capped_days: int = 0  # days whose C-FIND answer hit the source's cap even split by hour

    def add(self, other: "MigrationCounts") -> None:
        self.found += other.found
        self.verified += other.verified
        self.failed += other.failed
        self.instances += other.instances
        self.capped_days += other.capped_days


@dataclass
class MigrationRequest:
    """A migration of the studies `source_ae` holds dated `since`..`until` (YYYYMMDD, both included),
    newest day first; `next_day` and `counts` carry it over a continue-as-new."""

    key: str
    tenant: str
    source_ae: str
    since: str
    until: str
    modalities: list[str] = field(default_factory=list)
    concurrency: int = 2  # C-MOVEs to the source at once
    find_limit: int = 0  # the most answers the source gives to one C-FIND (0: unknown)
    next_day: str = ""
    counts: MigrationCounts = field(default_factory=MigrationCounts)


@dataclass
class MigrationDay:
    request: MigrationRequest
    day: str
    searched: bool = False  # carried over a continue-as-new: the day's C-FIND is done
    counts: MigrationCounts = field(default_factory=MigrationCounts)


@dataclass
class MigrationStudy:
    key: str
    tenant: str
    source_ae: str
    study_uid: str
    expected: int | None = None  # the source's instance count, when its C-FIND said it
    slots: int = 0  # C-MOVEs to this source at once across every migration (0: migrate_concurrency)


@dataclass
class StudyMigrated:
    state: str  # verified | failed
    instances: int = 0
    detail: str = ""


@dataclass
class MigrationFailure:
    study: MigrationStudy
    reason: str


def day_before(day: str) -> str:
    """The calendar day before `day` (YYYYMMDD): date arithmetic only, safe in workflow code."""
    before = date(int(day[:4]), int(day[4:6]), int(day[6:8])) - timedelta(days=1)
    return before.strftime("%Y%m%d")
