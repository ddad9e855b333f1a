"""Issue 33: a series document rewritten pass after pass converted every instance again; each
stored object's DICOM JSON is now converted once per worker (activities/json_fragments.py)."""

from __future__ import annotations

import gzip
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

from activities.context import ActivityContext
from activities.json_fragments import JsonFragments
from activities.study_steps import StudyActivities
from archive.blobstore import LocalBlobStore
from archive.dicom.dicom_json import DICOMWEB_ROOT, file_json, gzip_json_texts, instance_base, json_text
from contract.payloads import StudyRef

SERIES = "dcm_qa_ge/In/SliceTiming/2_Ax_fMRI_HB8_72sl_int_asc"


@dataclass
class _Item:  # what series_snapshot gives: the committed instance's UID and blob
    sop_uid: str
    blob_key: str


class _CountingBlobs(LocalBlobStore):
    reads = 0

    def local_copy(self, key: str):  # type: ignore[override]
        self.reads += 1
        return super().local_copy(key)


def _stored(blobs: LocalBlobStore, files: list[Path]) -> list[_Item]:
    items = []
    for index, path in enumerate(files):
        spool = blobs.new_spool_file()
        shutil.copyfile(path, spool)
        key = f"default/study/series/{index}.dcm"
        blobs.commit(blobs.stage_file(spool), key)
        items.append(_Item(f"1.2.3.{index}", key))
    return items


def test_a_second_pass_converts_only_the_new_instances(tmp_path, data_dir) -> None:
    files = sorted((data_dir / SERIES).glob("*.dcm"))[:6]
    blobs = _CountingBlobs(tmp_path / "blobs")
    items = _stored(blobs, files)
    steps = StudyActivities(ActivityContext(None, None, blobs, None))  # type: ignore[arg-type]  # only blobs are used
    ref = StudyRef("default", "1.2.3")
    assert steps._write_series_json(ref, "1.2.3.9", items[:4], "doc1") == []
    assert blobs.reads == 4
    assert steps._write_series_json(ref, "1.2.3.9", items, "doc2") == []
    assert blobs.reads == 6, "the first four came from the fragments"
    written = json.loads(gzip.decompress(blobs.read_bytes("doc2")))
    expected = [
        file_json(path, instance_base(DICOMWEB_ROOT, ref.study_uid, "1.2.3.9", item.sop_uid))
        for path, item in zip(files, items, strict=True)
    ]
    assert written == expected  # the same document as converting every instance afresh


def test_a_document_from_texts_is_the_json_of_its_items(data_dir) -> None:
    items = [file_json(path, "/dicomweb/x") for path in sorted((data_dir / SERIES).glob("*.dcm"))[:3]]
    made = gzip.decompress(gzip_json_texts(json_text(item) for item in items))
    assert made == json.dumps(items, separators=(",", ":")).encode()


def test_fragments_are_bounded_and_the_least_recently_used_goes_first() -> None:
    fragments = JsonFragments(max_bytes=10)
    fragments.put("a", "1234")
    fragments.put("b", "5678")
    assert fragments.get("a") == "1234"  # a is now the most recently used
    fragments.put("c", "90ab")
    assert (fragments.get("b"), fragments.get("a"), fragments.get("c")) == (None, "1234", "90ab")
    assert fragments.size == 8
    fragments.put("huge", "x" * 11)  # larger than the whole bound: not kept, nothing evicted for it
    assert fragments.get("huge") is None and fragments.size == 8
