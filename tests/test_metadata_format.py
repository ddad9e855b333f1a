"""Series documents written by an older JSON writer (another DOCUMENT_FORMAT) are never served:
WADO-RS builds the answer from the stored files instead, and `dicomflow metadata regenerate` has
the study's workflow rewrite them.

The stale document here is the one the writer before format 2 made for a Siemens MR with an Icon
Image Sequence: the icon's BulkDataURI named only its tag, so a viewer following it was given the
image's pixels."""

from __future__ import annotations

import gzip
import json

import psycopg
import requests
from dicomweb_client.api import DICOMwebClient
from pydicom import dcmread

from archive.dicom.dicom_json import DOCUMENT_FORMAT
from testkit.metadata_waits import wait_metadata_settled
from tests.auth import auth_headers

TENANT = "formats"
MR_WITH_ICON = ("pydicom-data", "data_store", "data", "MR-SIEMENS-DICOM-WithOverlays.dcm")
ICON_PATH = "/bulkdata/00880200/0/7FE00010"


def _icon_uri(response: requests.Response) -> str:
    assert response.status_code == 200, response.text[:300]
    return response.json()[0]["00880200"]["Value"][0]["7FE00010"]["BulkDataURI"]


def _document(conn: psycopg.Connection, series: str) -> tuple[str, int | None]:
    return conn.execute(
        "SELECT metadata_key, metadata_format FROM series WHERE tenant = %s AND series_uid = %s", (TENANT, series)
    ).fetchone()


def test_a_document_in_an_older_format_is_rebuilt_not_served(stack, data_dir):
    original = dcmread(data_dir.joinpath(*MR_WITH_ICON))
    study, series = str(original.StudyInstanceUID), str(original.SeriesInstanceUID)
    DICOMwebClient(url=stack.url("/dicomweb"), headers=auth_headers(TENANT)).store_instances(datasets=[original])
    wait_metadata_settled(stack.settings, TENANT, series)
    url = stack.url(f"/dicomweb/studies/{study}/series/{series}/metadata")
    headers = auth_headers(TENANT, Accept="application/dicom+json")

    with psycopg.connect(stack.settings.effective_postgres_dsn(), autocommit=True) as conn:
        key, written_in = _document(conn, series)
        assert written_in == DOCUMENT_FORMAT
        blob = stack.settings.var_path / "blobs" / key
        stale = json.loads(gzip.decompress(blob.read_bytes()))
        icon = stale[0]["00880200"]["Value"][0]["7FE00010"]
        assert icon["BulkDataURI"].endswith(ICON_PATH)
        icon["BulkDataURI"] = icon["BulkDataURI"].replace(ICON_PATH, "/bulkdata/7FE00010")  # as the old writer put it
        blob.write_bytes(gzip.compress(json.dumps(stale).encode()))
        # the control: a document in the current format is served as written (so the checks below can fail)
        assert _icon_uri(requests.get(url, headers=headers, timeout=30)).endswith("/bulkdata/7FE00010")

        conn.execute("UPDATE series SET metadata_format = NULL WHERE tenant = %s AND series_uid = %s", (TENANT, series))
        assert _icon_uri(requests.get(url, headers=headers, timeout=30)).endswith(ICON_PATH), "the stale document was served"

        listed = stack.cli("metadata", "regenerate", "--tenant", TENANT, "--dry-run")
        assert listed.returncode == 0 and f"{TENANT} {study}" in listed.stdout, listed.stdout + listed.stderr
        assert _document(conn, series)[1] is None, "a dry run changed nothing"
        regenerated = stack.cli("metadata", "regenerate", "--tenant", TENANT)
        assert regenerated.returncode == 0 and "1/1 study workflows signalled" in regenerated.stdout, (
            regenerated.stdout + regenerated.stderr
        )
        wait_metadata_settled(stack.settings, TENANT, series)
        rewritten = json.loads(gzip.decompress(blob.read_bytes()))
        assert rewritten[0]["00880200"]["Value"][0]["7FE00010"]["BulkDataURI"].endswith(ICON_PATH)
        assert "0 studies" in stack.cli("metadata", "regenerate", "--tenant", TENANT, "--dry-run").stdout
