"""Forwarding rules (issue 32, first part): a study that a rule's match finds is sent onward, once
stable and processed, by its own workflow `forward:{tenant}:{rule}:{StudyInstanceUID}`, to a real
dcmtk storescp; a rule that does not match starts nothing."""

from __future__ import annotations

import subprocess

from pydicom import dcmread
from temporalio.client import WorkflowExecutionStatus

from testkit.temporal_waits import list_ids, wait_completed
from tests.conftest import ROUTE_AE, run
from tests.test_query_retrieve import received, storescp


def test_a_matching_study_is_forwarded_to_the_rules_destination(stack, data_dir, storescp_port, tmp_path):
    files = sorted((data_dir / "dcm_qa_nih").rglob("*.dcm"))[:6]  # a real Siemens MR series
    headers = [dcmread(p, stop_before_pixels=True) for p in files]
    study = str(headers[0].StudyInstanceUID)
    assert {str(h.Modality) for h in headers} == {"MR"}
    out = tmp_path / "pacs"
    with storescp(storescp_port, out, accept_all=True):
        s = stack.settings
        sent = subprocess.run(
            ["dcmsend", "-aet", ROUTE_AE, "-aec", s.ae_title, "127.0.0.1", str(s.dimse_port), *map(str, files)],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert sent.returncode == 0, sent.stderr[-2000:]
        forward = f"forward:route:mr-to-pacs:{study}"
        assert run(wait_completed(s, [f"study:route:{study}"], timeout=180)) == {
            f"study:route:{study}": WorkflowExecutionStatus.COMPLETED
        }
        assert run(wait_completed(s, [forward], timeout=180)) == {forward: WorkflowExecutionStatus.COMPLETED}
    got = received(out)
    assert set(got) == {str(h.SOPInstanceUID) for h in headers}, "every instance of the study reached the destination"
    assert all(str(ds.StudyInstanceUID) == study for ds in got.values())
    assert not run(list_ids(s, f"WorkflowId = 'forward:route:ct-to-pacs:{study}'")), "the CT rule does not match an MR study"
