"""Waiting for a study workflow's JSON step: a series document that is the series as it is now."""

from __future__ import annotations

import time

import psycopg

from archive.config.settings import Settings
from archive.dicom.dicom_json import DOCUMENT_FORMAT

_SETTLED = """SELECT se.metadata_version = se.version AND se.metadata_format = %s
                     AND se.metadata_instances = (SELECT count(*) FROM instance i WHERE i.tenant = se.tenant
                                                  AND i.series_uid = se.series_uid AND i.state <> 'failed')
              FROM series se WHERE se.tenant = %s AND se.series_uid = %s"""


def wait_metadata_settled(settings: Settings, tenant: str, series_uid: str, timeout: float = 120) -> None:
    """Until the series document WADO-RS would serve is fresh (archive.index.reads.SeriesMetadata.document_fresh)."""
    deadline = time.monotonic() + timeout
    with psycopg.connect(settings.effective_postgres_dsn(), autocommit=True) as conn:
        while time.monotonic() < deadline:
            row = conn.execute(_SETTLED, (DOCUMENT_FORMAT, tenant, series_uid)).fetchone()
            if row and row[0]:
                return
            time.sleep(0.5)
    raise AssertionError(f"the document of series {series_uid} was not regenerated within {timeout:.0f} s")
