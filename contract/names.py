"""Names both sides of Temporal agree on: activity names (workflows call activities by name),
workflow ids and signal names (receivers and activities signal workflows by them). Plain strings,
so any layer may read them without importing a workflow."""

STORE = "store_study"
VERIFY = "verify_study"
COMMIT = "commit_study"
TRANSCODE = "transcode_study"
INDEX = "index_study"
GENERATE_JSON = "generate_study_json"
STUDY_STEPS = (STORE, VERIFY, COMMIT, TRANSCODE, INDEX, GENERATE_JSON)
# steps that are a statement or two in the index: local activities (the rest read or write blobs,
# may run long and heartbeat, and stay activities on the task queue)
LOCAL_STUDY_STEPS = (STORE, COMMIT, INDEX)
# the whole pass as one activity (issue 33: a study cost about 45 history events, 85 ms of Temporal
# server CPU for a one-instance study): STUDY_STEPS in order, the forwards started before the documents
PROCESS_STUDY = "process_study"

COMMITMENT_CHECK = "check_commitment"
COMMITMENT_REPORT = "send_commitment_report"

STUDY_WORKFLOW = "StudyWorkflow"
STUDY_SIGNAL = "instances_arrived"
PROCEDURE_STEP_SIGNAL = "procedure_step"  # MPPS status of the study, for the Temporal UI
COMMITMENT_WORKFLOW = "StorageCommitmentWorkflow"
COMMITMENT_WAKE = "instances_committed"


def study_workflow_id(tenant: str, study_uid: str) -> str:
    return f"study:{tenant}:{study_uid}"


def commitment_workflow_id(tenant: str, transaction_uid: str) -> str:
    return f"commit:{tenant}:{transaction_uid}"


ROUTE_STUDY = "route_study"  # the study workflow's last step: start the forwards its rules ask for
FORWARD_WORKFLOW = "ForwardWorkflow"
FORWARD_SIGNAL = "study_processed"  # the study was processed (again): there may be more to send
FORWARD_LIST = "list_forward"  # what the destination has not acknowledged yet, as a retrieve to send
FORWARD_AUDIT = "audit_forward"  # a round's instances transferred, in the audit trail
FORWARD_STOW_SEND = "send_forward_stow"  # a forward's owed instances over STOW-RS
FORWARD_COPY_SEND = "copy_forward"  # a forward's owed instances received into another tenant of this archive
FORWARD_WITHDRAW = "withdraw_forward"  # a cancelled forward's round: closed, what it did not send stays owed


def forward_workflow_id(tenant: str, rule: str, study_uid: str) -> str:
    return f"forward:{tenant}:{rule}:{study_uid}"


RETRIEVE_SEND = "send_retrieve"
RETRIEVE_FINISH = "finish_retrieve"
RETRIEVE_WORKFLOW = "RetrieveWorkflow"


def retrieve_workflow_id(tenant: str, retrieve_id: str) -> str:
    return f"move:{tenant}:{retrieve_id}"


# IOCM: rejected instances deleted once their grace has passed, by a workflow a Schedule starts
REJECTION_EXPIRY_WORKFLOW = "RejectionExpiryWorkflow"
REJECTION_EXPIRY_SCHEDULE = "rejection-expiry"  # the Schedule's id; its runs are rejection-expiry-{time}
EXPIRE_REJECTIONS = "expire_rejections"


# corrections: a patient or study update, merge or new identifier (archive/corrections)
UPDATE_WORKFLOW = "UpdateWorkflow"
UPDATE_LIST = "list_update_studies"
UPDATE_STUDY = "update_study"
UPDATE_FINISH = "finish_update"


def update_workflow_id(tenant: str, operation_id: str) -> str:
    return f"update:{tenant}:{operation_id}"


# storage lifecycle (archive/lifecycle): a Schedule starts a run, the run a workflow per study
LIFECYCLE_RUN_WORKFLOW = "LifecycleRunWorkflow"
LIFECYCLE_STUDY_WORKFLOW = "LifecycleStudyWorkflow"
LIFECYCLE_SCHEDULE = "lifecycle"
LIFECYCLE_PLAN = "plan_lifecycle"
LIFECYCLE_APPLY = "apply_lifecycle"


def lifecycle_workflow_id(tenant: str, study_uid: str) -> str:
    return f"lifecycle:{tenant}:{study_uid}"


# migration from a legacy archive over DIMSE Q/R (`dicomflow migrate`): a parent per migration,
# a child per day of study dates; progress is rows in the index (archive/index/migration_progress.py)
MIGRATION_WORKFLOW = "MigrationWorkflow"
MIGRATION_DAY_WORKFLOW = "MigrationDayWorkflow"
MIGRATE_BEGIN = "begin_migration"
MIGRATE_FIND_DAY = "find_migration_day"
MIGRATE_NEXT = "next_migration_studies"
MIGRATE_MOVE = "move_migration_study"
MIGRATE_FAIL = "fail_migration_study"
MIGRATE_FINISH = "finish_migration"


def migration_key(tenant: str, source_ae: str, since: str, until: str, modalities: list[str]) -> str:
    """What names one migration, in the index and in its workflow ids: the same command names the
    same migration, so running it again resumes it."""
    key = f"{tenant}:{source_ae}:{since}-{until}"
    return key + (":" + "+".join(sorted(modalities)) if modalities else "")


def migration_workflow_id(key: str) -> str:
    return f"migrate:{key}"


def migration_day_workflow_id(key: str, day: str) -> str:
    return f"migrate:{key}:{day}"
