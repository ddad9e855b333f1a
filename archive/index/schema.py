"""The index schema, as numbered migrations applied once each, under an advisory lock."""

from __future__ import annotations

from psycopg import AsyncConnection

from archive.index.instance_state import check_constraint_sql

_LOCK_KEY = 0x646963_6F6D  # "dicom": one migrator at a time across processes

MIGRATIONS: list[str] = [
    # 1: the five levels, with the attributes QIDO matches on as columns
    """
    CREATE TABLE tenant (
        name        text PRIMARY KEY,
        created_at  timestamptz NOT NULL DEFAULT now()
    );
    CREATE TABLE patient (
        tenant       text NOT NULL REFERENCES tenant(name),
        patient_id   text NOT NULL,
        issuer       text NOT NULL DEFAULT '',
        patient_name text,
        birth_date   text,
        sex          text,
        PRIMARY KEY (tenant, patient_id, issuer)
    );
    CREATE TABLE study (
        tenant               text NOT NULL REFERENCES tenant(name),
        study_uid            text NOT NULL,
        patient_id           text NOT NULL DEFAULT '',
        issuer               text NOT NULL DEFAULT '',
        patient_name         text,
        patient_birth_date   text,
        patient_sex          text,
        study_date           text,
        study_time           text,
        accession_number     text,
        study_id             text,
        referring_physician  text,
        study_description    text,
        modalities           text[] NOT NULL DEFAULT '{}',
        sop_classes          text[] NOT NULL DEFAULT '{}',
        num_series           integer NOT NULL DEFAULT 0,
        num_instances        integer NOT NULL DEFAULT 0,
        state                text NOT NULL DEFAULT 'receiving',
        created_at           timestamptz NOT NULL DEFAULT now(),
        updated_at           timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (tenant, study_uid)
    );
    CREATE INDEX study_date_idx ON study (tenant, study_date);
    CREATE INDEX study_patient_id_idx ON study (tenant, patient_id);
    CREATE INDEX study_patient_name_idx ON study (tenant, lower(patient_name) text_pattern_ops);
    CREATE INDEX study_accession_idx ON study (tenant, accession_number);
    CREATE INDEX study_updated_idx ON study (tenant, updated_at DESC);
    CREATE TABLE series (
        tenant              text NOT NULL REFERENCES tenant(name),
        series_uid          text NOT NULL,
        study_uid           text NOT NULL,
        modality            text,
        series_number       integer,
        series_description  text,
        body_part           text,
        series_date         text,
        series_time         text,
        num_instances       integer NOT NULL DEFAULT 0,
        metadata_key        text,
        metadata_state      text NOT NULL DEFAULT 'pending',
        metadata_attempts   integer NOT NULL DEFAULT 0,
        metadata_error      text,
        PRIMARY KEY (tenant, series_uid),
        FOREIGN KEY (tenant, study_uid) REFERENCES study (tenant, study_uid) ON DELETE CASCADE
    );
    CREATE INDEX series_study_idx ON series (tenant, study_uid);
    CREATE INDEX series_modality_idx ON series (tenant, modality);
    CREATE TABLE instance (
        tenant            text NOT NULL REFERENCES tenant(name),
        sop_uid           text NOT NULL,
        series_uid        text NOT NULL,
        study_uid         text NOT NULL,
        sop_class_uid     text NOT NULL,
        instance_number   integer,
        transfer_syntax   text NOT NULL,
        number_of_frames  integer,
        rows              integer,
        columns           integer,
        bits_allocated    integer,
        blob_key          text NOT NULL,
        transcoded_key    text,
        transcoded_syntax text,
        size              bigint NOT NULL,
        sha256            text NOT NULL,
        source            text NOT NULL,
        state             text NOT NULL DEFAULT 'received',
        failure_reason    text,
        signalled         boolean NOT NULL DEFAULT false,
        received_at       timestamptz NOT NULL DEFAULT now(),
        committed_at      timestamptz,
        PRIMARY KEY (tenant, sop_uid),
        FOREIGN KEY (tenant, series_uid) REFERENCES series (tenant, series_uid) ON DELETE CASCADE
    );
    CREATE INDEX instance_series_idx ON instance (tenant, series_uid, instance_number);
    CREATE INDEX instance_study_idx ON instance (tenant, study_uid);
    CREATE INDEX instance_unsignalled_idx ON instance (received_at) WHERE NOT signalled;
    CREATE TABLE storage_commitment (
        tenant           text NOT NULL REFERENCES tenant(name),
        transaction_uid  text NOT NULL,
        calling_ae       text NOT NULL,
        called_ae        text NOT NULL,
        refs             jsonb NOT NULL,
        state            text NOT NULL DEFAULT 'pending',
        committed        jsonb,
        failed           jsonb,
        requested_at     timestamptz NOT NULL DEFAULT now(),
        reported_at      timestamptz,
        PRIMARY KEY (tenant, transaction_uid)
    );
    """,
    # 2: "all studies" newest first straight from an index at any size; the stalled-study sweep
    """
    CREATE INDEX study_listing_idx ON study (tenant, study_date DESC NULLS LAST, study_time DESC NULLS LAST, study_uid);
    CREATE INDEX instance_unprocessed_idx ON instance (received_at) WHERE state = 'received' AND signalled;
    """,
    # 3: the audit trail (DICOM PS3.15 A.5 event codes), append-only: a trigger refuses any change
    """
    CREATE TABLE audit_event (
        id            bigserial PRIMARY KEY,
        occurred_at   timestamptz NOT NULL,
        event_code    integer NOT NULL,
        event_name    text NOT NULL,
        action        char(1) NOT NULL,
        outcome       smallint NOT NULL,
        subject       text NOT NULL,
        method        text NOT NULL,
        source        text NOT NULL,
        peer          text,
        tenant        text,
        study_uid     text,
        series_uid    text,
        sop_uid       text,
        detail        jsonb NOT NULL DEFAULT '{}'
    );
    CREATE INDEX audit_time_idx ON audit_event (occurred_at);
    CREATE INDEX audit_tenant_idx ON audit_event (tenant, occurred_at);
    CREATE INDEX audit_subject_idx ON audit_event (subject, occurred_at);
    CREATE INDEX audit_study_idx ON audit_event (study_uid) WHERE study_uid IS NOT NULL;
    CREATE FUNCTION audit_event_is_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN RAISE EXCEPTION 'the audit trail is append-only: % is not allowed', TG_OP; END $$;
    CREATE TRIGGER audit_event_no_update BEFORE UPDATE OR DELETE ON audit_event
        FOR EACH ROW EXECUTE FUNCTION audit_event_is_append_only();
    CREATE TRIGGER audit_event_no_truncate BEFORE TRUNCATE ON audit_event
        FOR EACH STATEMENT EXECUTE FUNCTION audit_event_is_append_only();
    """,
    # 4: the outbox of deletions: the study's workflow must hear of each, even if Temporal was down
    """
    CREATE TABLE deletion_outbox (
        tenant      text NOT NULL,
        study_uid   text NOT NULL,
        instances   integer NOT NULL,
        deleted_at  timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (tenant, study_uid)
    );
    """,
    # 5: retrieves (C-MOVE): what each must send and what the destination acknowledged, so a
    # retrieve resumed after a crash sends only what is still owed
    """
    CREATE TABLE retrieve (
        id           text PRIMARY KEY,
        tenant       text NOT NULL,
        requested_by text NOT NULL,
        destination  text NOT NULL,
        total        integer NOT NULL,
        state        text NOT NULL DEFAULT 'running',
        created_at   timestamptz NOT NULL DEFAULT now(),
        finished_at  timestamptz
    );
    CREATE TABLE retrieve_item (
        retrieve_id  text NOT NULL REFERENCES retrieve(id) ON DELETE CASCADE,
        position     integer NOT NULL,
        sop_uid      text NOT NULL,
        state        text NOT NULL DEFAULT 'pending',
        status       integer,
        PRIMARY KEY (retrieve_id, position)
    );
    CREATE INDEX retrieve_created_idx ON retrieve (created_at);
    """,
    # 6: the modality worklist: scheduled procedure steps, matched on columns, answered from the item
    """
    CREATE TABLE worklist_item (
        tenant                 text NOT NULL,
        accession_number       text NOT NULL,
        sps_id                 text NOT NULL,
        patient_id             text,
        patient_name           text,
        patient_birth_date     text,
        patient_sex            text,
        study_uid              text,
        requested_procedure_id text,
        modality               text,
        station_aes            text[] NOT NULL DEFAULT '{}',
        start_date             text,
        start_time             text,
        performing_physician   text,
        sps_description        text,
        sps_status             text,
        item                   jsonb NOT NULL,
        updated_at             timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (tenant, accession_number, sps_id)
    );
    CREATE INDEX worklist_start_idx ON worklist_item (tenant, start_date, start_time);
    CREATE INDEX worklist_station_idx ON worklist_item USING gin (station_aes);
    """,
    # 7: Modality Performed Procedure Steps (MPPS N-CREATE / N-SET) as the modality reports them
    """
    CREATE TABLE performed_step (
        tenant            text NOT NULL,
        mpps_uid          text NOT NULL,
        status            text NOT NULL,
        study_uid         text,
        accession_number  text,
        sps_id            text,
        modality          text,
        station_ae        text,
        item              jsonb NOT NULL,
        created_at        timestamptz NOT NULL DEFAULT now(),
        updated_at        timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (tenant, mpps_uid)
    );
    CREATE INDEX performed_step_study_idx ON performed_step (tenant, study_uid, updated_at DESC);
    """,
    # 8: UPS-RS workitems (Unified Procedure Step, PS3.4 CC), searchable on columns
    """
    CREATE TABLE workitem (
        tenant            text NOT NULL,
        uid               text NOT NULL,
        state             text NOT NULL,
        label             text,
        worklist_label    text,
        priority          text,
        start_datetime    text,
        patient_name      text,
        patient_id        text,
        transaction_uid   text,
        item              jsonb NOT NULL,
        created_at        timestamptz NOT NULL DEFAULT now(),
        updated_at        timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (tenant, uid)
    );
    CREATE INDEX workitem_start_idx ON workitem (tenant, start_datetime);
    ALTER TABLE worklist_item ADD COLUMN workitem_uid text;
    """,
    # 9: storage commitment reports go out once, by whoever claims them (workflow or open association)
    """
    ALTER TABLE storage_commitment ADD COLUMN claimed_at timestamptz;
    """,
    # 10: instances kept under uid_policy "lenient" although a UID breaks PS3.5, and why
    """
    ALTER TABLE instance ADD COLUMN nonconformance text;
    CREATE INDEX instance_nonconformant_idx ON instance (tenant) WHERE nonconformance IS NOT NULL;
    """,
    # 11: a series' version, moved by every replace, repair and delete in it (values from one
    # sequence, so a series deleted and stored again never repeats an earlier version), and the
    # version and instance count its generated metadata document shows (a store changes the count
    # and leaves the series row alone: concurrent receipts into one series do not queue on it);
    # blob keys findable, for the orphan sweeper
    """
    CREATE SEQUENCE series_version_seq;
    ALTER TABLE series ADD COLUMN version bigint NOT NULL DEFAULT nextval('series_version_seq');
    ALTER TABLE series ADD COLUMN metadata_version bigint;
    ALTER TABLE series ADD COLUMN metadata_instances integer;
    UPDATE series se SET metadata_version = se.version, metadata_instances = se.num_instances
        WHERE se.metadata_key IS NOT NULL AND se.metadata_state IN ('ready', 'partial')
          AND se.num_instances = (SELECT count(*) FROM instance i WHERE i.tenant = se.tenant
                                    AND i.series_uid = se.series_uid AND i.state = 'committed');
    CREATE INDEX instance_blob_key_idx ON instance (blob_key);
    CREATE INDEX instance_transcoded_key_idx ON instance (transcoded_key) WHERE transcoded_key IS NOT NULL;
    CREATE INDEX series_metadata_key_idx ON series (metadata_key) WHERE metadata_key IS NOT NULL;
    """,
    # 12: a person name is matched per component group (archive/query/matching.py), each group from
    # an index: an exact name read every study (10.6 ms at 20,000 studies; 0.1 ms from these)
    """
    CREATE INDEX study_pn_group1_idx ON study (tenant, lower(split_part(patient_name, '=', 1)) text_pattern_ops);
    CREATE INDEX study_pn_group2_idx ON study (tenant, lower(split_part(patient_name, '=', 2)) text_pattern_ops)
        WHERE patient_name LIKE '%=%';
    CREATE INDEX study_pn_group3_idx ON study (tenant, lower(split_part(patient_name, '=', 3)) text_pattern_ops)
        WHERE patient_name LIKE '%=%';
    """,
    # 13: `dicomflow status` counts the backlog (studies not ready, failed instances) from indexes
    """
    CREATE INDEX study_not_ready_idx ON study (tenant) WHERE state <> 'ready';
    CREATE INDEX instance_failed_idx ON instance (tenant) WHERE state = 'failed';
    """,
    # 14: the format a series document was written in (archive.dicom.dicom_json.DOCUMENT_FORMAT): the
    # documents already written predate formats, so they stay NULL and are stale until regenerated
    """
    ALTER TABLE series ADD COLUMN metadata_format smallint;
    """,
    # 15: an instance's state is one of archive.index.instance_state.InstanceState
    "ALTER TABLE instance ADD CONSTRAINT instance_state_known"
    " CHECK (state IN ('received', 'stored', 'verified', 'committed', 'failed'))",
    # 16: the change feed (archive/index/change_feed.py): a row per stored, replaced or deleted
    # instance, written by the statement that makes the change; `sequence` is given in commit order
    """
    CREATE TABLE change_feed (
        id             bigserial PRIMARY KEY,
        tenant         text NOT NULL,
        sequence       bigint,
        action         text NOT NULL CHECK (action IN ('create', 'update', 'delete')),
        study_uid      text NOT NULL,
        series_uid     text NOT NULL,
        sop_uid        text NOT NULL,
        sop_class_uid  text,
        occurred_at    timestamptz NOT NULL DEFAULT now()
    );
    CREATE UNIQUE INDEX change_feed_sequence_idx ON change_feed (tenant, sequence) WHERE sequence IS NOT NULL;
    CREATE INDEX change_feed_unsequenced_idx ON change_feed (id) WHERE sequence IS NULL;
    CREATE INDEX change_feed_instance_idx ON change_feed (tenant, sop_uid, sequence);
    """,
    # 17: what a forward already delivered, by instance (archive/routing/rules.owed_instances)
    "CREATE INDEX retrieve_item_sop_idx ON retrieve_item (sop_uid)",
    # 18: forwarding rules added at run time through /admin/forwarding (archive/index/forward_rules.py,
    # issue 32): the settings file seeds the rules, these add to them; `rule` is a settings rule as JSON
    """
    CREATE TABLE forward_rule (
        name        text PRIMARY KEY,
        tenant      text,
        rule        jsonb NOT NULL,
        created_by  text NOT NULL,
        created_at  timestamptz NOT NULL DEFAULT now()
    );
    """,
    # 19: IOCM rejection (archive/index/rejections.py): the instance state 'rejected', and a row per
    # rejected instance naming its rejection note; the row outlives the instance (a re-send of an
    # expired one is still refused) unless the rejection is revoked
    "ALTER TABLE instance DROP CONSTRAINT instance_state_known;\n"
    + check_constraint_sql()
    + """;
    CREATE TABLE rejection (
        tenant         text NOT NULL,
        sop_uid        text NOT NULL,
        study_uid      text NOT NULL,
        series_uid     text NOT NULL,
        sop_class_uid  text,
        code           text NOT NULL,
        note_uid       text NOT NULL,
        prior_state    text NOT NULL,
        rejected_at    timestamptz NOT NULL DEFAULT now(),
        restored_at    timestamptz,
        deleted_at     timestamptz,
        PRIMARY KEY (tenant, sop_uid)
    );
    CREATE INDEX rejection_due_idx ON rejection (rejected_at) WHERE restored_at IS NULL AND deleted_at IS NULL;
    CREATE INDEX rejection_study_idx ON rejection (tenant, study_uid);
    """,
    # 20: corrections (archive/index/updates.py): an operation per bulk update or HL7 ADT message
    # (its id also keeps a message sent twice from being applied twice), and the original values of
    # every study it changed, recoverable for audit
    """
    CREATE TABLE update_operation (
        id             text PRIMARY KEY,
        tenant         text NOT NULL,
        kind           text NOT NULL,
        status         text NOT NULL DEFAULT 'running',
        studies_total  integer NOT NULL DEFAULT 0,
        studies_done   integer NOT NULL DEFAULT 0,
        request        jsonb NOT NULL,
        error          text,
        created_by     text NOT NULL,
        created_at     timestamptz NOT NULL DEFAULT now(),
        updated_at     timestamptz NOT NULL DEFAULT now()
    );
    CREATE TABLE update_log (
        operation_id  text NOT NULL,
        tenant        text NOT NULL,
        study_uid     text NOT NULL,
        original      jsonb NOT NULL,
        changed       jsonb NOT NULL,
        applied_at    timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (operation_id, study_uid)
    );
    CREATE INDEX update_log_study_idx ON update_log (tenant, study_uid);
    """,
    # 21: storage lifecycle (archive/lifecycle): studies on hold, and what each rule did to a study
    # (at which instance count, so one that received more since is due again)
    """
    CREATE TABLE study_hold (
        tenant     text NOT NULL,
        study_uid  text NOT NULL,
        reason     text NOT NULL,
        held_by    text NOT NULL,
        held_at    timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (tenant, study_uid)
    );
    CREATE TABLE lifecycle_done (
        tenant     text NOT NULL,
        study_uid  text NOT NULL,
        rule       text NOT NULL,
        instances  integer NOT NULL,
        detail     text,
        bytes_saved bigint NOT NULL DEFAULT 0,
        done_at    timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (tenant, study_uid, rule)
    );
    """,
    # 22: tiering (issue 30): which blob store holds an instance's bytes, hot (blob_dir or s3_*) or
    # cold (cold_blob_dir or cold_s3_*); reads try hot then cold, so this is for accounting and the
    # lifecycle's plan. Not in any index predicate: setting it stays a HOT update
    """
    ALTER TABLE instance ADD COLUMN tier text NOT NULL DEFAULT 'hot' CHECK (tier IN ('hot', 'cold'));
    """,
    # 23: migration from a legacy archive (issue 33, archive/index/migration_progress.py): each
    # migration, each day its C-FIND searched, and each study found with what became of it, so a
    # migration stopped anywhere resumes where it was and never pulls a verified study again
    """
    CREATE TABLE migration (
        key         text PRIMARY KEY,
        tenant      text NOT NULL,
        source_ae   text NOT NULL,
        since       text NOT NULL,
        until       text NOT NULL,
        modalities  text[] NOT NULL DEFAULT '{}',
        state       text NOT NULL DEFAULT 'running',
        started_at  timestamptz NOT NULL DEFAULT now(),
        updated_at  timestamptz NOT NULL DEFAULT now()
    );
    CREATE TABLE migration_day (
        key          text NOT NULL REFERENCES migration (key) ON DELETE CASCADE,
        day          text NOT NULL,
        found        integer NOT NULL,
        capped       boolean NOT NULL DEFAULT false,
        searched_at  timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (key, day)
    );
    CREATE TABLE migration_study (
        key          text NOT NULL REFERENCES migration (key) ON DELETE CASCADE,
        study_uid    text NOT NULL,
        day          text NOT NULL,
        expected     integer,
        received     integer NOT NULL DEFAULT 0,
        state        text NOT NULL DEFAULT 'found' CHECK (state IN ('found', 'moved', 'verified', 'failed')),
        moves        integer NOT NULL DEFAULT 0,
        detail       text,
        found_at     timestamptz NOT NULL DEFAULT now(),
        moved_at     timestamptz,
        verified_at  timestamptz,
        PRIMARY KEY (key, study_uid)
    );
    CREATE INDEX migration_study_pending_idx ON migration_study (key, day) WHERE state IN ('found', 'moved');
    """,
    # 24: blobs to remove, queued in the transaction that dropped the rows naming them
    # (archive/index/blob_removals.py): a crash between that commit and the removal no longer leaves
    # deleted patient data on disk until the orphan sweep
    """
    CREATE TABLE blob_removal (
        blob_key   text PRIMARY KEY,
        reason     text NOT NULL,
        queued_at  timestamptz NOT NULL DEFAULT now()
    );
    """,
]


async def schema_version(conn: AsyncConnection) -> int:
    """The newest migration applied, 0 on an empty database; needs no privilege beyond SELECT."""
    exists = await (await conn.execute("SELECT to_regclass('schema_version') IS NOT NULL")).fetchone()
    if not exists or not exists[0]:
        return 0
    row = await (await conn.execute("SELECT coalesce(max(version), 0) FROM schema_version")).fetchone()
    return row[0] if row else 0


async def migrate(conn: AsyncConnection) -> int:
    """Bring the schema to the newest version; safe to run from many processes at once. An index
    already up to date is only read, so a role without DDL rights may call this too."""
    if await schema_version(conn) >= len(MIGRATIONS):
        return len(MIGRATIONS)
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_KEY,))
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_version (version integer PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        current = await schema_version(conn)
        for number, sql in enumerate(MIGRATIONS, start=1):
            if number > current:
                await conn.execute(sql)
                await conn.execute("INSERT INTO schema_version (version) VALUES (%s)", (number,))
        return len(MIGRATIONS)
