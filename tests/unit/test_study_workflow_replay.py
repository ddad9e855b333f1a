"""Study workflows started before StudyParams.version 2 replay on today's code.

The histories in tests/unit/histories were recorded by the code before version 2 (commit 9a0c8ea,
test_study_workflow_env's scenario with arrivals during each pass, a deletion and two corrupt
instances: three runs cut by continue-as-new, a patch marker for the one-activity pass in each).
A worker that picks up such a study after an upgrade replays its history first; Temporal's
sandboxed Replayer raises on any command that differs from the recorded one."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from temporalio.client import WorkflowHistory
from temporalio.worker import Replayer

from workflows.study import StudyWorkflow

HISTORIES = sorted((Path(__file__).parent / "histories").glob("study-v1-*.json"))


@pytest.mark.parametrize("path", HISTORIES, ids=[p.stem for p in HISTORIES])
def test_a_version_1_history_replays(path: Path) -> None:
    history = WorkflowHistory.from_json("study:envtest:recorded", path.read_text())
    assert any(e.marker_recorded_event_attributes.marker_name == "core_patch" for e in history.events), "a version 1 history"
    asyncio.run(Replayer(workflows=[StudyWorkflow]).replay_workflow(history))


def test_the_recorded_histories_are_there() -> None:
    assert len(HISTORIES) == 3
