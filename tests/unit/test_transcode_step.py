"""The transcode step's answer to each refusal of the decode pool, on real files and a real blob
store (the index calls are recorded instead): a refusal for good marks the instance and the step
goes on; a timeout is retried by Temporal, and taken as final after a few attempts."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydicom import dcmread
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities import study_steps
from activities.context import ActivityContext
from activities.study_steps import TIMEOUT_ATTEMPTS, StudyActivities
from archive.blobstore import LocalBlobStore
from archive.config.settings import Settings
from archive.index.lifecycle import InstanceFile
from archive.pixels.decode_pool import DecodePool
from archive.pixels.limits import INTERPRETER_BYTES, DecodeLimits
from contract.payloads import StudyRef
from tests.pixel_bombs import J2K_SOURCE, j2k_declaring

REF = StudyRef("t", "1.2.3")
J2K = "1.2.840.10008.1.2.4.90"


class Index:
    """What the step would have written to the index."""

    def __init__(self, items: list[InstanceFile]) -> None:
        self.items = items
        self.transcoded: dict[str, str] = {}
        self.marked: dict[str, tuple[str, str | None]] = {}

    async def instances_in_state(self, pool: Any, tenant: str, study_uid: str, state: str) -> list[InstanceFile]:
        return self.items

    async def record_transcoded(self, pool: Any, tenant: str, sop_uid: str, key: str, syntax: str) -> None:
        self.transcoded[sop_uid] = key

    async def set_state(self, pool: Any, tenant: str, sop_uid: str, state: str, reason: str | None = None) -> None:
        self.marked[sop_uid] = (state, reason)


@pytest.fixture
def pool() -> Iterator[DecodePool]:
    with DecodePool(DecodeLimits(INTERPRETER_BYTES + 2**30, 30.0, 1)) as pool:
        yield pool


@pytest.fixture
def hasty_pool() -> Iterator[DecodePool]:
    with DecodePool(DecodeLimits(INTERPRETER_BYTES + 2**30, 0.05, 1)) as pool:  # the slow object takes ~0.4 s
        yield pool


def stored(blobs: LocalBlobStore, name: str, data: bytes) -> InstanceFile:
    key = f"t/{name}.dcm"
    blobs.commit(blobs.stage_bytes(data), key)
    return InstanceFile(name, "series", key, len(data), "", J2K)


def transcode(
    tmp_path: Path, monkeypatch: Any, pool: DecodePool, items: list[InstanceFile], attempt: int = 1
) -> tuple[Any, Index]:
    index = Index(items)
    for name in ("instances_in_state", "record_transcoded", "set_state"):
        monkeypatch.setattr(study_steps.lifecycle, name, getattr(index, name))
    monkeypatch.setattr(study_steps, "shared_pool", lambda limits: pool)
    settings = Settings(transcode_policy="uncompressed")
    steps = StudyActivities(ActivityContext(settings, None, LocalBlobStore(tmp_path / "blobs"), None))
    env = ActivityEnvironment()
    env.info = dataclasses.replace(env.info, attempt=attempt)
    try:
        return asyncio.run(env.run(steps.transcode, REF)), index
    except ApplicationError as err:
        return err, index


def test_a_refusal_for_good_marks_the_instance_and_the_step_goes_on(tmp_path, monkeypatch, pool, data_dir):
    blobs = LocalBlobStore(tmp_path / "blobs")
    source = data_dir.joinpath(*J2K_SOURCE)
    items = [stored(blobs, "bomb", j2k_declaring(source, 60000)), stored(blobs, "real", source.read_bytes())]
    result, index = transcode(tmp_path, monkeypatch, pool, items)
    assert result.processed == 1 and result.failed == 1
    state, reason = index.marked["bomb"]
    assert state == "committed" and reason.startswith("transcode refused (undecodable)")  # its SIZ marker lies
    assert list(index.transcoded) == ["real"]
    assert dcmread(blobs.root / index.transcoded["real"]).file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.1"


def test_a_timeout_is_retried_then_taken_as_final(tmp_path, monkeypatch, hasty_pool, data_dir):
    blobs = LocalBlobStore(tmp_path / "blobs")
    slow = [stored(blobs, "slow", j2k_declaring(data_dir.joinpath(*J2K_SOURCE), 8000, tile=0, header_too=True))]
    error, index = transcode(tmp_path, monkeypatch, hasty_pool, slow)
    assert isinstance(error, ApplicationError) and not error.non_retryable and "timeout" in str(error)
    assert not index.marked
    result, index = transcode(tmp_path, monkeypatch, hasty_pool, slow, attempt=TIMEOUT_ATTEMPTS)
    assert result.failed == 1 and index.marked["slow"][1].startswith("transcode refused (timeout)")
