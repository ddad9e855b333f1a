"""`dicomflow migrate` from a second running archive (dcmtk's dcmqrscp, its database filled with real
MR files restamped into studies over five days) and `dicomflow import` of a disk dump: stopped
half-way and resumed, every study arrives once with the source's pixels (issue 33 item 4)."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import psycopg
import pytest
from pydicom import dcmread
from temporalio.client import WorkflowExecutionStatus

from contract import names
from contract.search_attributes import INSTANCE_COUNT
from testkit.legacy_pacs import legacy_pacs
from testkit.replay import replay_all
from testkit.restamp import as_new_study
from testkit.running_stack import DICOMFLOW, REPO
from testkit.temporal_waits import client_for, wait_completed
from tests.conftest import IMPORT_AE, LEGACY_AE, LEGACY_B_AE, LEGACY_PORT, STORESCP_AE, run
from tests.test_query_retrieve import worker_pids
from workflows.migration import MigrationDayWorkflow, MigrationWorkflow

SINCE, UNTIL = "20190301", "20190305"
# six MR studies (the Toshiba series cut in six) and one study stamped CT, over four of the five days
MR_DAYS = ["20190301", "20190302", "20190302", "20190303", "20190303", "20190305"]
CT_DAY = "20190302"


def _write(payloads: list[bytes], folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for n, payload in enumerate(payloads):
        path = folder / f"{n:04d}.dcm"
        path.write_bytes(payload)
        paths.append(path)
    return paths


@pytest.fixture(scope="module")
def legacy(stack, data_dir, tmp_path_factory):
    """The legacy archive under two AE titles (one per migration test), each holding the same studies;
    yields {StudyInstanceUID: {SOPInstanceUID: source file}} and the modality of each study."""
    folder = tmp_path_factory.mktemp("legacy")
    toshiba = sorted(p for p in (data_dir / "dcm_qa_toshiba").rglob("*") if p.is_file())
    cut = len(toshiba) // len(MR_DAYS) + 1
    files: list[Path] = []
    for n, day in enumerate(MR_DAYS):
        files += _write(as_new_study(toshiba[n * cut : (n + 1) * cut], StudyDate=day), folder / "files" / f"mr{n}")
    nih = sorted(p for p in (data_dir / "dcm_qa_nih").rglob("*") if p.is_file())
    files += _write(as_new_study(nih, StudyDate=CT_DAY, Modality="CT"), folder / "files" / "ct")
    studies: dict[str, dict[str, Path]] = {}
    modality: dict[str, str] = {}
    for path in files:
        ds = dcmread(path, stop_before_pixels=True)
        studies.setdefault(str(ds.StudyInstanceUID), {})[str(ds.SOPInstanceUID)] = path
        modality[str(ds.StudyInstanceUID)] = str(ds.Modality)
    destination = {stack.settings.dimse.ae_title: ("127.0.0.1", stack.settings.dimse.port)}
    with legacy_pacs(folder, LEGACY_PORT, {LEGACY_AE: files, LEGACY_B_AE: files}, destination):
        yield studies, modality


def _rows(stack, tenant: str) -> dict[str, list[tuple[str, str]]]:
    """Per study, (SOP Instance UID, blob key) of every instance the archive holds in `tenant`."""
    with psycopg.connect(stack.settings.effective_postgres_dsn()) as conn:
        rows = conn.execute("SELECT study_uid, sop_uid, blob_key FROM instance WHERE tenant = %s", (tenant,)).fetchall()
    held: dict[str, list[tuple[str, str]]] = {}
    for study, sop, key in rows:
        held.setdefault(study, []).append((sop, key))
    return held


def _progress(stack, key: str) -> dict[str, tuple[str, int]]:
    """Per study of the migration: (state, C-MOVEs sent for it)."""
    with psycopg.connect(stack.settings.effective_postgres_dsn()) as conn:
        rows = conn.execute("SELECT study_uid, state, moves FROM migration_study WHERE key = %s", (key,)).fetchall()
    return {study: (state, moves) for study, state, moves in rows}


def _wait_verified(stack, key: str, at_least: int, timeout: float = 240) -> dict[str, tuple[str, int]]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        progress = _progress(stack, key)
        if sum(state == "verified" for state, _ in progress.values()) >= at_least:
            return progress
        time.sleep(0.2)
    raise AssertionError(f"fewer than {at_least} studies verified in {timeout} s: {_progress(stack, key)}")


def _assert_arrived_once_with_the_source_pixels(stack, tenant: str, studies: dict[str, dict[str, Path]]) -> None:
    held = _rows(stack, tenant)
    assert set(held) == set(studies), "every study of the source, and nothing else"
    blobs = stack.settings.var_path / "blobs"
    for study, sources in studies.items():
        sops = [sop for sop, _ in held[study]]
        assert sorted(sops) == sorted(sources), f"study {study}: every instance, once"
        for sop, key in held[study][::9]:
            assert dcmread(blobs / key).PixelData == dcmread(sources[sop]).PixelData


def _migrate(stack, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return stack.cli("migrate", *args, timeout=timeout)


def test_a_migration_survives_a_killed_worker_and_pulls_every_study_once(stack, legacy):
    studies, _ = legacy
    tenant = "migrated"
    key = names.migration_key(tenant, LEGACY_AE, SINCE, UNTIL, [])
    started = _migrate(stack, "--from", LEGACY_AE, "--since", SINCE, "--until", UNTIL, "--detach")
    assert started.returncode == 0, started.stdout + started.stderr
    before_kill = _wait_verified(stack, key, 2)
    assert sum(state == "verified" for state, _ in before_kill.values()) < len(studies), "killed half-way"
    workers = worker_pids(stack)
    for pid in workers:
        os.kill(pid, signal.SIGKILL)
    workflow_id = names.migration_workflow_id(key)
    assert run(wait_completed(stack.settings, [workflow_id], timeout=600)) == {workflow_id: WorkflowExecutionStatus.COMPLETED}
    assert set(worker_pids(stack)).isdisjoint(workers), "Ray restarted the workers"

    progress = _progress(stack, key)
    assert set(progress) == set(studies) and {state for state, _ in progress.values()} == {"verified"}
    verified_before = [s for s, (state, _) in before_kill.items() if state == "verified"]
    assert all(progress[s][1] == 1 for s in verified_before), "a study verified before the kill was not pulled again"
    _assert_arrived_once_with_the_source_pixels(stack, tenant, studies)

    status = _migrate(stack, "status")
    assert status.returncode == 0 and f"verified {len(studies)}, failed 0" in status.stdout, status.stdout
    described = run(_describe(stack, workflow_id))
    assert described["instances"] == sum(len(s) for s in studies.values())
    assert described["memo"]["verified"] == len(studies)
    again = _migrate(stack, "--from", LEGACY_AE, "--since", SINCE, "--until", UNTIL)  # done: resumes to nothing
    assert again.returncode == 0, again.stdout + again.stderr
    assert {s: m for s, (_, m) in _progress(stack, key).items()} == {s: m for s, (_, m) in progress.items()}, (
        "nothing pulled again"
    )


async def _describe(stack, workflow_id: str) -> dict:
    handle = (await client_for(stack.settings)).get_workflow_handle(workflow_id)
    described = await handle.describe()
    memo = await described.memo()
    return {"instances": described.typed_search_attributes.get(INSTANCE_COUNT), "memo": memo}


def test_a_migration_stopped_half_way_resumes_where_it_was(stack, legacy):
    """Terminated part-way (the parent and its children), then the same command again: only what
    was not verified is pulled; `--modality MR` leaves out the study stamped CT (the source ignores
    ModalitiesInStudy: the migration asks for its series)."""
    studies, modality = legacy
    tenant = "migrated-b"
    key = names.migration_key(tenant, LEGACY_B_AE, SINCE, UNTIL, ["MR"])
    args = ["--from", LEGACY_B_AE, "--since", SINCE, "--until", UNTIL, "--modality", "MR", "--concurrency", "1"]
    assert _migrate(stack, *args, "--detach").returncode == 0
    before_stop = _wait_verified(stack, key, 2)
    workflow_id = names.migration_workflow_id(key)
    run(_terminate(stack, workflow_id))
    stopped = _progress(stack, key)
    assert sum(state == "verified" for state, _ in stopped.values()) < 6, "stopped half-way"

    resumed = _migrate(stack, *args)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "verified 6, failed 0" in resumed.stdout, resumed.stdout
    progress = _progress(stack, key)
    mr = {s: files for s, files in studies.items() if modality[s] == "MR"}
    assert set(progress) == set(mr), "the CT study is not part of an MR migration"
    assert {state for state, _ in progress.values()} == {"verified"}
    verified_before = [s for s, (state, _) in before_stop.items() if state == "verified"]
    assert all(progress[s][1] == 1 for s in verified_before), "a study verified before the stop was not pulled again"
    _assert_arrived_once_with_the_source_pixels(stack, tenant, mr)
    query = "WorkflowType IN ('MigrationWorkflow', 'MigrationDayWorkflow') AND ExecutionStatus = 'Completed'"
    assert run(replay_all(stack.settings, query, [MigrationWorkflow, MigrationDayWorkflow])) >= 2


async def _terminate(stack, workflow_id: str) -> None:
    await (await client_for(stack.settings)).get_workflow_handle(workflow_id).terminate("stopped half-way by the test")


def test_a_source_the_ae_table_does_not_allow_is_refused_with_what_to_change(stack):
    unknown = _migrate(stack, "--from", "NO_SUCH_PACS", "--since", SINCE)
    assert unknown.returncode == 2
    assert "'NO_SUCH_PACS' is not in the AE table" in unknown.stderr and "[ae_table.NO_SUCH_PACS]" in unknown.stderr
    no_store = _migrate(stack, "--from", STORESCP_AE, "--since", SINCE)  # a C-MOVE destination, which may not store
    assert no_store.returncode == 2 and 'does not allow "store"' in no_store.stderr, no_store.stderr
    no_date = _migrate(stack, "--from", LEGACY_AE)
    assert no_date.returncode == 2 and "--since" in no_date.stderr


def test_import_of_a_disk_dump_sends_nothing_twice(stack, data_dir, tmp_path):
    ge = sorted(p for p in (data_dir / "dcm_qa_ge").rglob("*") if p.is_file())[:40]
    nih = sorted(p for p in (data_dir / "dcm_qa_nih").rglob("*") if p.is_file())
    dump = tmp_path / "dump"
    first = _write(as_new_study(ge), dump / "a")
    second = _write(as_new_study(nih), dump / "b")
    (dump / "b" / "README.txt").write_text("not DICOM")

    def imported(*paths: Path) -> subprocess.CompletedProcess:
        done = subprocess.run(
            [DICOMFLOW, "import", *map(str, paths), "--aet", IMPORT_AE],
            env=stack.env,
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        return done

    assert f"{len(first)} stored" in imported(dump / "a").stdout  # a crash after the first half
    rerun = imported(dump)
    assert f"{len(second)} stored" in rerun.stdout and f"{len(first)} already stored before" in rerun.stdout, rerun.stdout
    assert "1 not DICOM" in rerun.stdout
    nothing = imported(dump)
    assert "0 stored" in nothing.stdout and f"{len(first) + len(second)} already stored before" in nothing.stdout
    held = _rows(stack, "imported")
    sops = sorted(sop for rows in held.values() for sop, _ in rows)
    expected = sorted(str(dcmread(p, stop_before_pixels=True).SOPInstanceUID) for p in first + second)
    assert sops == expected, "every file stored once"
