"""Bulk-load synthetic studies straight into the index with COPY, for QIDO latency at 1k-100k studies.

Only rows are written (no blobs): these studies answer queries but cannot be retrieved. Each is one
series of one MR instance with the identity `synthetic_patient(number)` gives it, state `ready`.
"""

from __future__ import annotations

import psycopg
from pydicom.uid import generate_uid

from bench.synthetic import synthetic_patient

MR_STORAGE = "1.2.840.10008.5.1.4.1.1.4"
EXPLICIT_LE = "1.2.840.10008.1.2.1"


def bulk_load(dsn: str, tenant: str, first: int, count: int, progress=print) -> None:
    """Studies first..first+count-1 for `tenant`, committed in batches of 10,000, then ANALYZEd.

    `dsn` is the archive's application role, which `up` grants MAINTAIN on the index tables
    (archive/index/grants.py): without statistics the queries measured right after a load ran on
    plans autovacuum would have replaced a minute later."""
    with psycopg.connect(dsn) as conn:
        conn.execute("INSERT INTO tenant (name) VALUES (%s) ON CONFLICT DO NOTHING", (tenant,))
        conn.commit()
        for start in range(first, first + count, 10_000):
            _load_batch(conn, tenant, start, min(10_000, first + count - start))
            conn.commit()
            progress(f"  index bulk load: {start + min(10_000, first + count - start) - first}/{count} studies")
        conn.execute("ANALYZE study; ANALYZE series; ANALYZE instance; ANALYZE patient")
        conn.commit()


def _load_batch(conn: psycopg.Connection, tenant: str, start: int, count: int) -> None:
    rows = []
    for number in range(start, start + count):
        rows.append((synthetic_patient(number), generate_uid(), generate_uid(), generate_uid()))
    with conn.cursor() as cur:
        with cur.copy("COPY patient (tenant, patient_id, patient_name, sex) FROM STDIN") as copy:
            for who, *_ in rows:
                copy.write_row((tenant, who["PatientID"], who["PatientName"], "O"))
        with cur.copy("""COPY study (tenant, study_uid, patient_id, patient_name, patient_sex, study_date, study_time,
                         accession_number, study_description, modalities, sop_classes, num_series, num_instances,
                         state) FROM STDIN""") as copy:
            for who, study, _, _ in rows:
                copy.write_row(
                    (
                        tenant,
                        study,
                        who["PatientID"],
                        who["PatientName"],
                        "O",
                        who["StudyDate"],
                        who["StudyTime"],
                        who["AccessionNumber"],
                        "BULK QIDO SCALE",
                        ["MR"],
                        [MR_STORAGE],
                        1,
                        1,
                        "ready",
                    )
                )
        with cur.copy("""COPY series (tenant, series_uid, study_uid, modality, series_number, num_instances,
                         metadata_state) FROM STDIN""") as copy:
            for _, study, series, _ in rows:
                copy.write_row((tenant, series, study, "MR", 1, 1, "ready"))
        with cur.copy("""COPY instance (tenant, sop_uid, series_uid, study_uid, sop_class_uid, instance_number,
                         transfer_syntax, rows, columns, bits_allocated, blob_key, size, sha256, source, state,
                         signalled) FROM STDIN""") as copy:
            for _, study, series, sop in rows:
                copy.write_row(
                    (
                        tenant,
                        sop,
                        series,
                        study,
                        MR_STORAGE,
                        1,
                        EXPLICIT_LE,
                        64,
                        64,
                        16,
                        f"bulk/{sop}",
                        0,
                        "",
                        "bulk",
                        "committed",
                        True,
                    )
                )
