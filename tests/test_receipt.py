"""The one receipt path, on the real index, with real files and the bad inputs it must refuse."""

from __future__ import annotations

import hashlib
import itertools

import psycopg
import pytest
from pydicom import dcmread
from pydicom.filewriter import dcmwrite

from archive.blobstore import LocalBlobStore
from archive.index.pool import open_index_pool
from archive.services.receipt import Outcome, Receiver
from tests.conftest import run

_tenants = itertools.count()


@pytest.fixture
def tenant():
    return f"receipt{next(_tenants)}"


@pytest.fixture
def receive(settings, tmp_path):
    blobs = LocalBlobStore(tmp_path / "blobs")

    def go(tenant: str, data: bytes, policy: str = "reject", expect: str | None = None, uid_policy: str = "strict"):
        async def inner():
            pool = await open_index_pool(settings.effective_postgres_dsn(), max_size=2)
            try:
                receiver = Receiver(blobs, pool, policy, uid_policy=uid_policy)
                return await receiver.receive(tenant, blobs.stage_bytes(data), "test", expect)
            finally:
                await pool.close()

        return run(inner())

    go.blobs = blobs
    return go


def stored_files(blobs: LocalBlobStore) -> list:
    return [p for p in blobs.root.rglob("*.dcm")]


def a_file(data_dir, name="dcm_qa_nih") -> bytes:
    return next((data_dir / name).rglob("*.dcm")).read_bytes()


def test_new_instance_is_stored_and_hashed(receive, tenant, data_dir):
    data = a_file(data_dir)
    receipt = receive(tenant, data)
    assert receipt.outcome is Outcome.STORED, receipt.reason
    assert receipt.sha256 == hashlib.sha256(data).hexdigest()
    assert receive.blobs.read_bytes(receipt.blob_key) == data  # original bytes kept as received
    assert not list(receive.blobs.spool_dir.iterdir())


def test_every_transfer_syntax_of_the_shared_data_is_accepted(receive, tenant, data_dir):
    seen = set()
    for path in sorted((data_dir / "dcm_qa_ts").rglob("*.dcm")):
        receipt = receive(tenant, path.read_bytes())
        assert receipt.outcome.ok, (path, receipt.reason)
        seen.add(receipt.transfer_syntax)
    assert {
        "1.2.840.10008.1.2",
        "1.2.840.10008.1.2.2",
        "1.2.840.10008.1.2.5",
        "1.2.840.10008.1.2.4.70",
        "1.2.840.10008.1.2.4.80",
        "1.2.840.10008.1.2.4.90",
    } <= seen


def test_same_bytes_again_changes_nothing(receive, tenant, data_dir):
    data = a_file(data_dir)
    first = receive(tenant, data)
    second = receive(tenant, data)
    assert second.outcome is Outcome.DUPLICATE and second.outcome.ok and not second.needs_workflow
    assert second.blob_key == first.blob_key and len(stored_files(receive.blobs)) == 1


def _study_state(settings, tenant: str) -> str:
    with psycopg.connect(settings.effective_postgres_dsn()) as conn:
        return conn.execute("SELECT state FROM study WHERE tenant = %s", (tenant,)).fetchone()[0]


def _study_done(settings, tenant: str) -> None:
    """What the study workflow's last step does."""
    with psycopg.connect(settings.effective_postgres_dsn()) as conn:
        conn.execute("UPDATE study SET state = 'ready' WHERE tenant = %s", (tenant,))


def test_a_resent_or_refused_instance_does_not_reopen_its_finished_study(receive, tenant, data_dir, settings):
    """A modality that resends a whole study starts no workflow for the copies, so the study must stay
    ready: reopened, nothing would ever close it again (found by the C-MOVE bench re-sending its study)."""
    files = sorted((data_dir / "dcm_qa_nih").rglob("*.dcm"))
    first, second = files[0].read_bytes(), files[1].read_bytes()
    assert receive(tenant, first).outcome is Outcome.STORED
    assert _study_state(settings, tenant) == "receiving"
    _study_done(settings, tenant)
    assert receive(tenant, first).outcome is Outcome.DUPLICATE
    assert receive(tenant, _altered(first)).outcome is Outcome.CONFLICT
    assert _study_state(settings, tenant) == "ready"
    same_study = (
        dcmread(files[1], stop_before_pixels=True).StudyInstanceUID == dcmread(files[0], stop_before_pixels=True).StudyInstanceUID
    )
    assert same_study
    assert receive(tenant, second).outcome is Outcome.STORED  # a new instance: its workflow will close the study
    assert _study_state(settings, tenant) == "receiving"


def _altered(data: bytes) -> bytes:
    import io

    ds = dcmread(io.BytesIO(data))
    ds.StudyDescription = "altered after the fact"
    out = io.BytesIO()
    dcmwrite(out, ds, enforce_file_format=True)
    return out.getvalue()


def test_different_bytes_same_uid_rejected_by_default(receive, tenant, data_dir):
    data = a_file(data_dir)
    first = receive(tenant, data)
    conflict = receive(tenant, _altered(data))
    assert conflict.outcome is Outcome.CONFLICT and "different content" in conflict.reason
    assert receive.blobs.read_bytes(first.blob_key) == data  # the stored object is untouched


def test_same_object_resent_in_another_transfer_syntax_is_a_duplicate(receive, tenant, data_dir):
    """A modality that resends after a failure may negotiate another syntax: same object (PS3.5 10)."""
    import io

    from pydicom.uid import ImplicitVRLittleEndian

    data = a_file(data_dir)
    first = receive(tenant, data)
    ds = dcmread(io.BytesIO(data))
    ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
    out = io.BytesIO()
    dcmwrite(out, ds, enforce_file_format=True, implicit_vr=True, little_endian=True)
    assert out.getvalue() != data
    again = receive(tenant, out.getvalue())
    assert again.outcome is Outcome.DUPLICATE and "another transfer syntax" in again.reason
    assert receive.blobs.read_bytes(first.blob_key) == data


def test_different_bytes_replace_when_policy_says_so(receive, tenant, data_dir):
    data = a_file(data_dir)
    receive(tenant, data)
    altered = _altered(data)
    replaced = receive(tenant, altered, policy="replace")
    assert replaced.outcome is Outcome.REPLACED and replaced.needs_workflow
    assert receive.blobs.read_bytes(replaced.blob_key) == altered


def test_bare_dataset_gets_part10_meta(receive, tenant, data_dir):
    data = a_file(data_dir)
    offset = 132 + 12 + int.from_bytes(data[140:144], "little")  # after the File Meta group
    receipt = receive(tenant, data[offset:])
    assert receipt.outcome is Outcome.STORED, receipt.reason
    stored = receive.blobs.read_bytes(receipt.blob_key)
    assert stored[128:132] == b"DICM" and stored.endswith(data[offset:])


@pytest.mark.parametrize("cut", [0.5, 0.99])
def test_truncated_object_is_refused(receive, tenant, data_dir, cut):
    data = a_file(data_dir)
    receipt = receive(tenant, data[: int(len(data) * cut)])
    assert receipt.outcome is Outcome.INVALID and "truncated" in receipt.reason
    assert not stored_files(receive.blobs) and not list(receive.blobs.spool_dir.iterdir())


def test_huge_length_is_refused(receive, tenant, data_dir):
    import struct

    data = bytearray(a_file(data_dir))
    at = data.find(b"\xe0\x7f\x10\x00")  # (7FE0,0010) explicit VR LE: tag, VR, 2 reserved, 4-byte length
    struct.pack_into("<L", data, at + 8, 0x7FFFFFF0)
    receipt = receive(tenant, bytes(data))
    assert receipt.outcome is Outcome.INVALID and "claims" in receipt.reason


def test_non_dicom_is_refused(receive, tenant):
    receipt = receive(tenant, b"%PDF-1.4 this is not an image" * 20)
    assert receipt.outcome is Outcome.INVALID and "not a DICOM" in receipt.reason
    assert not stored_files(receive.blobs)


def _with_uid(data_dir, keyword: str, value: str | None) -> bytes:
    import io

    ds = dcmread(io.BytesIO(a_file(data_dir)))
    if value is None:
        del ds[keyword]
    else:
        setattr(ds, keyword, value)
        if keyword == "SOPInstanceUID":
            ds.file_meta.MediaStorageSOPInstanceUID = value
    out = io.BytesIO()
    dcmwrite(out, ds, enforce_file_format=True)
    return out.getvalue()


@pytest.mark.parametrize(
    "keyword, value, message",
    [
        ("StudyInstanceUID", None, "StudyInstanceUID is missing"),
        ("SeriesInstanceUID", "1.2.abc", "not a valid UID"),
        ("SOPInstanceUID", "1.02.3", "not a valid UID"),
    ],
)
def test_bad_identity_is_refused_when_strict(receive, tenant, data_dir, keyword, value, message):
    receipt = receive(tenant, _with_uid(data_dir, keyword, value), uid_policy="strict")
    assert receipt.outcome is Outcome.INVALID and message in receipt.reason
    assert not stored_files(receive.blobs)


def test_harmless_nonconformant_uid_is_kept_and_marked_when_lenient(receive, tenant, data_dir, settings):
    """A real scanner's 64-hex-digit Study Instance UID: stored (lenient is the default), the row says why."""
    study = "a3f1" * 16
    receipt = receive(tenant, _with_uid(data_dir, "StudyInstanceUID", study), uid_policy="lenient")
    assert receipt.outcome is Outcome.STORED and "StudyInstanceUID" in receipt.nonconformance
    with psycopg.connect(settings.effective_postgres_dsn()) as conn:
        (note,) = conn.execute(
            "SELECT nonconformance FROM instance WHERE tenant = %s AND study_uid = %s", (tenant, study)
        ).fetchone()
    assert "not a valid UID" in note


@pytest.mark.parametrize("value", ["../../etc/passwd", "1.2/3", "1.2.3\\4", "1" * 65, "1.2 3"])
def test_unsafe_uid_is_refused_even_when_lenient(receive, tenant, data_dir, value):
    receipt = receive(tenant, _with_uid(data_dir, "SeriesInstanceUID", value), uid_policy="lenient")
    assert receipt.outcome is Outcome.INVALID and "nor safe to keep" in receipt.reason, receipt.reason
    assert not stored_files(receive.blobs)


def test_request_uid_must_match_dataset(receive, tenant, data_dir):
    receipt = receive(tenant, a_file(data_dir), expect="1.2.3.4")
    assert receipt.outcome is Outcome.MISMATCH and "differs" in receipt.reason


def test_bad_tenant_is_refused(receive, data_dir):
    receipt = receive("../etc", a_file(data_dir))
    assert receipt.outcome is Outcome.INVALID and "tenant" in receipt.reason


# State correctness (issue 11): replace never leaves neither object readable; a resend repairs --------


def _row(settings, tenant: str) -> tuple[str, str, str, bool]:
    with psycopg.connect(settings.effective_postgres_dsn()) as conn:
        return conn.execute("SELECT blob_key, sha256, state, signalled FROM instance WHERE tenant = %s", (tenant,)).fetchone()


def _series_version(settings, tenant: str) -> int:
    with psycopg.connect(settings.effective_postgres_dsn()) as conn:
        return conn.execute("SELECT version FROM series WHERE tenant = %s", (tenant,)).fetchone()[0]


def _series_state(settings, tenant: str) -> tuple[int, int]:
    """What metadata freshness compares: the series version and its number of instances served."""
    with psycopg.connect(settings.effective_postgres_dsn()) as conn:
        return conn.execute(
            "SELECT se.version, (SELECT count(*) FROM instance i WHERE i.tenant = se.tenant"
            " AND i.series_uid = se.series_uid AND i.state <> 'failed') FROM series se WHERE se.tenant = %s",
            (tenant,),
        ).fetchone()


class PowerCut(LocalBlobStore):
    """A local store that fails at one step of a replace, once armed: what a crash there leaves behind."""

    def __init__(self, root, step: str) -> None:
        super().__init__(root)
        self.step, self.armed = step, False

    def commit(self, staged, key: str) -> None:
        super().commit(staged, key)
        if self.armed and self.step == "after new blob":
            raise OSError("power cut after the new object was written")

    def delete(self, key: str) -> None:
        if self.armed and self.step == "after row":
            raise OSError("power cut before the old object was removed")
        super().delete(key)


def test_replace_writes_a_new_object_and_only_then_removes_the_old(receive, tenant, data_dir, settings):
    data = a_file(data_dir)
    first = receive(tenant, data)
    altered = _altered(data)
    replaced = receive(tenant, altered, policy="replace")
    assert replaced.outcome is Outcome.REPLACED and replaced.blob_key != first.blob_key
    assert _row(settings, tenant)[:2] == (replaced.blob_key, hashlib.sha256(altered).hexdigest())
    assert [p.read_bytes() for p in stored_files(receive.blobs)] == [altered]  # the old object went after the row


@pytest.mark.parametrize("step", ["after new blob", "after row"])
def test_a_crash_during_replace_leaves_the_old_or_the_new_object_readable(settings, tmp_path, tenant, data_dir, step):
    blobs = PowerCut(tmp_path / "blobs", step)
    data = a_file(data_dir)
    altered = _altered(data)

    async def go():
        pool = await open_index_pool(settings.effective_postgres_dsn(), max_size=2)
        try:
            receiver = Receiver(blobs, pool, "replace")
            first = await receiver.receive(tenant, blobs.stage_bytes(data), "test")
            blobs.armed = True
            return first, await receiver.receive(tenant, blobs.stage_bytes(altered), "test")
        finally:
            await pool.close()

    first, second = run(go())
    key, sha, _, _ = _row(settings, tenant)
    readable = blobs.read_bytes(key)
    assert hashlib.sha256(readable).hexdigest() == sha, "the row must name an object with its bytes"
    if step == "after new blob":  # the row never moved: the old object, untouched, is what is stored
        assert second.outcome is Outcome.FAILED and readable == data and key == first.blob_key
    else:  # the row moved: the new object is stored and acknowledged; the old one waits for the sweeper
        assert second.outcome is Outcome.REPLACED and readable == altered
        assert blobs.read_bytes(first.blob_key) == data


def test_resend_rewrites_a_missing_object(receive, tenant, data_dir, settings):
    data = a_file(data_dir)
    first = receive(tenant, data)
    (receive.blobs.root / first.blob_key).unlink()  # lost from the disk behind the archive's back
    again = receive(tenant, data)
    assert again.outcome is Outcome.DUPLICATE and again.outcome.ok and "repaired" in again.reason
    assert receive.blobs.read_bytes(_row(settings, tenant)[0]) == data


def test_resend_of_a_failed_instance_repairs_and_reprocesses_it(receive, tenant, data_dir, settings):
    data = a_file(data_dir)
    first = receive(tenant, data)
    path = receive.blobs.root / first.blob_key
    path.write_bytes(data[:-100] + b"\xff" * 100)  # bit rot, then the workflow's verify marked it failed
    with psycopg.connect(settings.effective_postgres_dsn()) as conn:
        conn.execute(
            "UPDATE instance SET state = 'failed', failure_reason = 'SHA-256 differs', signalled = true WHERE tenant = %s",
            (tenant,),
        )
    before = _series_version(settings, tenant)
    again = receive(tenant, data)
    assert again.outcome is Outcome.DUPLICATE and again.needs_workflow, again.reason
    assert receive.blobs.read_bytes(_row(settings, tenant)[0]) == data and not path.exists()
    assert _row(settings, tenant)[2:] == ("received", False)  # verified and committed again by its workflow
    assert _series_version(settings, tenant) > before  # the instance is back in what the series serves


def test_series_state_moves_with_every_store_replace_and_delete(receive, tenant, data_dir, settings):
    """A store moves the count (not the series row, which concurrent receipts would queue on);
    replace and delete move the version, so a delete and a store leave no earlier state behind."""
    from archive.index.deletion import delete_objects

    data = a_file(data_dir)
    stored = receive(tenant, data)
    states = [_series_state(settings, tenant)]
    receive(tenant, data)  # the same bytes again change nothing
    states.append(_series_state(settings, tenant))
    receive(tenant, _altered(data), policy="replace")
    states.append(_series_state(settings, tenant))
    second = receive(tenant, _with_uid(data_dir, "SOPInstanceUID", "1.2.826.0.1.3680043.8.498.1"))
    states.append(_series_state(settings, tenant))
    a = stored.attributes

    async def delete_first():
        pool = await open_index_pool(settings.effective_postgres_dsn(), max_size=1)
        try:
            return await delete_objects(pool, tenant, a.study_uid, a.series_uid, a.sop_uid)
        finally:
            await pool.close()

    assert run(delete_first()).instances == 1 and second.outcome is Outcome.STORED
    states.append(_series_state(settings, tenant))
    assert states[0] == states[1], states
    assert states[1][0] < states[2][0] and states[2][1] == 1, states  # replaced: new version, same count
    assert states[3] == (states[2][0], 2), states  # stored: same version, one more
    assert states[4][0] > states[3][0] and states[4][1] == 1, states  # deleted: new version, one fewer
    assert len(set(states[2:])) == 3, "no state repeats"
