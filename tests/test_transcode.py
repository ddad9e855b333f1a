"""transcode_policy = "uncompressed": the transcode step keeps an Explicit VR Little Endian copy of
each compressed object beside the original, on the real index and blob store of the test stack; an
object the decode pool refuses stays as received, marked on its row, and the step goes on."""

from __future__ import annotations

import numpy as np
import psycopg
from pydicom import dcmread
from pydicom.pixels import pixel_array
from temporalio.testing import ActivityEnvironment

from activities.context import ActivityContext
from activities.study_steps import StudyActivities
from archive.blobstore import LocalBlobStore
from archive.index.pool import open_index_pool
from archive.services.receipt import Receiver
from contract.payloads import StudyRef
from tests.conftest import run
from tests.pixel_bombs import J2K_SOURCE, j2k_declaring

TENANT = "transcode"
# lossless JPEG 2000, RLE, JPEG lossless (process 14) and one uncompressed object that needs no copy
FILES = ["693_J2KR.dcm", "emri_small_RLE.dcm", "JPEG-LL.dcm", "MR2_UNCR.dcm"]


def test_compressed_objects_get_a_lossless_uncompressed_copy(stack, data_dir):
    paths = [next(data_dir.rglob(name)) for name in FILES]
    # its codestream declares 60000 x 60000 pixels, its header 1024 x 1024: the pool refuses it unread
    bomb = j2k_declaring(data_dir.joinpath(*J2K_SOURCE), 60000)
    settings = stack.settings.with_values(transcode_policy="uncompressed")
    blobs = LocalBlobStore(settings.var_path / "blobs")
    dsn = settings.effective_postgres_dsn()

    async def go():
        pool = await open_index_pool(dsn, max_size=2)
        try:
            receipts = [await Receiver(blobs, pool).receive(TENANT, blobs.stage_bytes(p.read_bytes()), "test") for p in paths]
            receipts.append(await Receiver(blobs, pool).receive(TENANT, blobs.stage_bytes(bomb), "test"))
        finally:
            await pool.close()
        with psycopg.connect(dsn) as conn:  # as after the commit step; signalled, so no workflow takes them
            conn.execute("UPDATE instance SET state = 'committed', signalled = true WHERE tenant = %s", (TENANT,))
        ctx = await ActivityContext.open(settings)
        try:
            steps = StudyActivities(ctx)
            studies = sorted({r.attributes.study_uid for r in receipts})
            results = [await ActivityEnvironment().run(steps.transcode, StudyRef(TENANT, s)) for s in studies]
        finally:
            await ctx.close()
        return receipts, results

    receipts, results = run(go())
    assert all(r.outcome.ok for r in receipts)
    assert sum(r.processed for r in results) == 3 and sum(r.failed for r in results) == 1
    [failure] = [f for r in results for f in r.failures]
    assert failure.startswith(receipts[-1].attributes.sop_uid) and "undecodable" in failure
    with psycopg.connect(dsn) as conn:
        rows = dict(
            (sop, (key, syntax, state, reason))
            for sop, key, syntax, state, reason in conn.execute(
                "SELECT sop_uid, transcoded_key, transcoded_syntax, state, failure_reason FROM instance WHERE tenant = %s",
                (TENANT,),
            )
        )
    key, syntax, state, reason = rows[receipts[-1].attributes.sop_uid]
    assert key is None and state == "committed"  # still served as received
    assert reason.startswith("transcode refused (undecodable)") and "SIZ marker describes 60000 x 60000" in reason
    for path, receipt in zip(paths, receipts):
        key, syntax, _, _ = rows[receipt.attributes.sop_uid]
        if path.name == "MR2_UNCR.dcm":
            assert key is None and syntax is None
            continue
        assert syntax == "1.2.840.10008.1.2.1"
        copy = dcmread(settings.var_path / "blobs" / key)
        original = dcmread(path)
        assert copy.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.1"
        assert copy.SOPInstanceUID == original.SOPInstanceUID
        assert np.array_equal(pixel_array(copy), pixel_array(original)), f"{path.name}: not lossless"
        assert (settings.var_path / "blobs" / receipt.blob_key).read_bytes() == path.read_bytes()  # original kept
