"""Forwarding rules (issue 32, first part): a study that a rule's match finds is sent onward, once
stable and processed, by its own workflow `forward:{tenant}:{rule}:{StudyInstanceUID}`, to a real
dcmtk storescp; a rule that does not match starts nothing."""

from __future__ import annotations

import io
import json
import re
import subprocess
import time
from datetime import UTC

import requests
from pydicom import dcmread
from temporalio.client import WorkflowExecutionStatus

from testkit.temporal_waits import list_ids, wait_completed
from tests.auth import operator_headers
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
        _dcmsend(stack, files)
        forward = f"forward:route:mr-to-pacs:{study}"
        assert run(wait_completed(s, [f"study:route:{study}"], timeout=180)) == {
            f"study:route:{study}": WorkflowExecutionStatus.COMPLETED
        }
        assert run(wait_completed(s, [forward], timeout=180)) == {forward: WorkflowExecutionStatus.COMPLETED}
    got = received(out)
    assert set(got) == {str(h.SOPInstanceUID) for h in headers}, "every instance of the study reached the destination"
    assert all(str(ds.StudyInstanceUID) == study for ds in got.values())
    assert not run(list_ids(s, f"WorkflowId = 'forward:route:ct-to-pacs:{study}'")), "the CT rule does not match an MR study"
    # the audit trail has the transfer (PS3.15 DICOM Instances Transferred), /metrics the destination's counts
    events = requests.get(
        stack.url("/admin/audit"), params={"study": study, "limit": 100}, headers=operator_headers(), timeout=30
    ).json()
    sent = [e for e in events if e["source"] == "forward" and e["event_code"] == 110104]
    assert sent and sent[0]["detail"]["instances"] == len(headers) and sent[0]["detail"]["destination"] == "STORESCP", events[:3]
    metrics = requests.get(stack.url("/metrics"), headers=operator_headers(), timeout=30).text
    completed = re.search(r'^dicomflow_forward_instances\{destination="STORESCP",state="completed"\} (\S+)$', metrics, re.M)
    assert completed and float(completed.group(1)) >= len(headers), metrics[-2000:]
    # an operator tries the rules against the stored study
    tried = stack.cli("forward", "test", "mr-to-pacs", study)
    assert tried.returncode == 0 and "matches rule 'mr-to-pacs'" in tried.stdout and "0 instance(s)" in tried.stdout, tried.stdout
    other = stack.cli("forward", "test", "ct-to-pacs", study)
    assert other.returncode == 1 and "does not match" in other.stdout, other.stdout
    assert stack.cli("forward", "test", "no-such-rule", study).returncode == 2


def _dcmsend(stack, paths, calling_ae: str = ROUTE_AE) -> None:
    s = stack.settings
    sent = subprocess.run(
        ["dcmsend", "-aet", calling_ae, "-aec", s.dimse.ae_title, "127.0.0.1", str(s.dimse.port), *map(str, paths)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert sent.returncode == 0, sent.stderr[-2000:]


def _wait_for_files(folder, count: int, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while len([p for p in folder.glob("*") if p.is_file()]) < count:
        assert time.monotonic() < deadline, f"{folder}: {len(list(folder.glob('*')))} of {count} instances arrived"
        time.sleep(0.5)


def test_a_destination_down_at_first_gets_everything_and_later_instances_go_alone(stack, data_dir, storescp_port, tmp_path):
    """The PACS is down when the study is processed: the forward retries until it is up, then sends
    the study. Two instances added to the study afterwards are sent on their own, not the study again."""
    from tests.test_durability import new_study

    payloads = new_study(data_dir, 5)  # a real GE MR series, re-stamped into a study of its own
    files = []
    for number, payload in enumerate(payloads):
        files.append(tmp_path / f"{number}.dcm")
        files[-1].write_bytes(payload)
    uids = [str(dcmread(p, stop_before_pixels=True).SOPInstanceUID) for p in files]
    study = str(dcmread(files[0], stop_before_pixels=True).StudyInstanceUID)
    s = stack.settings
    _dcmsend(stack, files[:3])
    assert run(wait_completed(s, [f"study:route:{study}"], timeout=180)) == {
        f"study:route:{study}": WorkflowExecutionStatus.COMPLETED
    }
    time.sleep(3)  # the forward has met a closed port by now, and retries
    first = tmp_path / "pacs-first"
    with storescp(storescp_port, first, accept_all=True):
        forward = f"forward:route:mr-to-pacs:{study}"
        assert run(wait_completed(s, [forward], timeout=180)) == {forward: WorkflowExecutionStatus.COMPLETED}
        assert set(received(first)) == set(uids[:3])
    later = tmp_path / "pacs-later"
    with storescp(storescp_port, later, accept_all=True):
        _dcmsend(stack, files[3:])
        _wait_for_files(later, 2)
        time.sleep(2)  # anything sent twice would have come by now
    assert set(received(later)) == set(uids[3:]), "only the instances the destination had not acknowledged"


def test_a_deidentified_forward_carries_no_identity_and_consistent_new_uids(stack, data_dir, storescp_port, tmp_path):
    """The research rule applies PS3.15's Basic Profile (dicom-anonymizer's tables): no name, ID or
    date of the original arrives, the new UIDs hold the study together and are the ones the
    destination's key gives, and an object flagged with burned-in annotation is not sent at all."""
    import io

    from pydicom.filewriter import dcmwrite

    from archive.routing.deidentify import consistent_uid, destination_key
    from tests.conftest import RESEARCH_AE, RESEARCH_PACS_AE
    from tests.test_durability import new_study

    originals = [dcmread(io.BytesIO(p)) for p in new_study(data_dir, 4)]
    originals[3].BurnedInAnnotation = "YES"
    files = []
    for number, ds in enumerate(originals):
        files.append(tmp_path / f"{number}.dcm")
        dcmwrite(files[-1], ds, enforce_file_format=True)
    study, s = str(originals[0].StudyInstanceUID), stack.settings
    out = tmp_path / "research"
    with storescp(storescp_port, out, accept_all=True, aet=RESEARCH_PACS_AE):
        _dcmsend(stack, files, RESEARCH_AE)
        forward = f"forward:research:research:{study}"
        assert run(wait_completed(s, [forward], timeout=180)) == {forward: WorkflowExecutionStatus.COMPLETED}
    got = list(received(out).values())
    assert len(got) == 3, "three sent; the one with burned-in annotation stayed home"
    key = destination_key((s.var_path / "secrets" / "deidentify_key").read_text().strip(), RESEARCH_PACS_AE)
    original = originals[0]
    for ds in got:
        assert ds.PatientIdentityRemoved == "YES" and "Basic Profile" in ds.DeidentificationMethod
        assert str(ds.PatientName) != str(original.PatientName) and ds.PatientID != original.PatientID
        dates = {str(e.value) for e in original.iterall() if e.VR == "DA" and e.value}
        assert dates and not dates & {str(e.value) for e in ds.iterall() if e.VR == "DA" and e.value}, "an original date arrived"
        assert str(ds.StudyInstanceUID) == consistent_uid(key, study), "the study's new UID, as the destination's key makes it"
        assert str(ds.SeriesInstanceUID) == consistent_uid(key, str(original.SeriesInstanceUID))
    assert {str(ds.SOPInstanceUID) for ds in got} == {consistent_uid(key, str(o.SOPInstanceUID)) for o in originals[:3]}
    assert not {str(o.SOPInstanceUID) for o in originals} & {str(ds.SOPInstanceUID) for ds in got}
    # an administrator sees the rule and the refusal; another tenant's administrator sees neither
    from tests.auth import admin_headers

    view = requests.get(stack.url("/admin/forwarding"), headers=admin_headers(["research"]), timeout=30).json()
    assert [rule["name"] for rule in view["rules"]] == ["research"]
    assert any(f["rule"] == "research" and f["sop_uid"] == str(originals[3].SOPInstanceUID) for f in view["failures"]), view
    other = requests.get(stack.url("/admin/forwarding"), headers=admin_headers(["route"]), timeout=30).json()
    assert "research" not in [rule["name"] for rule in other["rules"]] and not [
        f for f in other["failures"] if f["tenant"] == "research"
    ]


def test_a_stow_forward_reaches_a_dicomweb_destination_with_a_client_credentials_token(stack, data_dir):
    """The to-partner rule sends tenant stowsrc's studies over STOW-RS to a DICOMweb service (here
    tenant stowdst of this archive, over HTTPS), authenticated as an OAuth2 client of the test
    issuer: every instance arrives, with the pixel data it was stored with."""
    from dicomweb_client.api import DICOMwebClient

    from tests.auth import bearer
    from tests.test_durability import new_study

    payloads = new_study(data_dir, 3)
    study = str(dcmread(io.BytesIO(payloads[0]), stop_before_pixels=True).StudyInstanceUID)
    source = DICOMwebClient(url=stack.url("/tenants/stowsrc/dicomweb"), headers=bearer("stowsrc", ["writer"]))
    source.store_instances(datasets=[dcmread(io.BytesIO(p)) for p in payloads])
    forward = f"forward:stowsrc:to-partner:{study}"
    s = stack.settings
    assert run(wait_completed(s, [f"study:stowsrc:{study}"], timeout=180)) == {
        f"study:stowsrc:{study}": WorkflowExecutionStatus.COMPLETED
    }
    assert run(wait_completed(s, [forward], timeout=180)) == {forward: WorkflowExecutionStatus.COMPLETED}
    partner = DICOMwebClient(url=stack.url("/tenants/stowdst/dicomweb"), headers=bearer("stowdst", ["reader"]))
    arrived = {str(ds.SOPInstanceUID): ds for ds in partner.retrieve_study(study)}
    sent = {str(dcmread(io.BytesIO(p)).SOPInstanceUID): p for p in payloads}
    assert set(arrived) == set(sent)
    for uid, original in sent.items():
        copy = io.BytesIO()
        arrived[uid].save_as(copy, enforce_file_format=True)
        assert dcmread(io.BytesIO(copy.getvalue())).PixelData == dcmread(io.BytesIO(original)).PixelData


def test_a_destination_takes_no_more_senders_than_its_slots(stack, data_dir, storescp_port, tmp_path):
    """max_associations (2 by default) bounds the forwards sending to one destination at once, across
    every worker: while both of STORESCP's slots are held elsewhere, nothing is sent; once they are
    free, everything is."""
    import psycopg

    from archive.index.slots import slot_key
    from tests.test_durability import new_study

    files = []
    for number, payload in enumerate(new_study(data_dir, 3)):
        files.append(tmp_path / f"{number}.dcm")
        files[-1].write_bytes(payload)
    study, s = str(dcmread(files[0], stop_before_pixels=True).StudyInstanceUID), stack.settings
    out = tmp_path / "pacs"
    with storescp(storescp_port, out, accept_all=True):
        holder = psycopg.connect(s.effective_postgres_dsn(), autocommit=True)  # another worker's two senders
        try:
            for slot in (0, 1):
                holder.execute("SELECT pg_advisory_lock(%s, %s)", (slot_key("STORESCP"), slot))
            _dcmsend(stack, files)
            assert run(wait_completed(s, [f"study:route:{study}"], timeout=180)) == {
                f"study:route:{study}": WorkflowExecutionStatus.COMPLETED
            }
            time.sleep(4)  # the forward has asked for a slot and been told to wait by now
            assert not [p for p in out.glob("*") if p.is_file()], "sent although every slot was taken"
            waiting = json.loads(stack.cli("status", "--json", timeout=120).stdout)["backlog"]["forwards"]["STORESCP"]
            assert waiting["pending"] >= 3, waiting  # what an operator sees while the PACS is busy
        finally:
            holder.close()
        forward = f"forward:route:mr-to-pacs:{study}"
        assert run(wait_completed(s, [forward], timeout=180)) == {forward: WorkflowExecutionStatus.COMPLETED}
    assert len(received(out)) == 3
    drained = stack.cli("status", timeout=120)
    assert re.search(r"forward: STORESCP: 0 instances owed", drained.stdout), drained.stdout


def test_an_instance_rule_forwards_before_the_study_is_processed(stack, data_dir, storescp_port, tmp_path):
    """when = "instance" (an AI service that wants images at once): the forward is told as the
    receipt's batch is signalled, so it starts before the study's workflow has begun its first step
    (the order of the two workflows' own timestamps, not a time limit)."""
    from tests.conftest import LIVE_AE
    from tests.test_durability import new_study

    files = []
    for number, payload in enumerate(new_study(data_dir, 3)):
        files.append(tmp_path / f"{number}.dcm")
        files[-1].write_bytes(payload)
    study, s = str(dcmread(files[0], stop_before_pixels=True).StudyInstanceUID), stack.settings
    out = tmp_path / "ai"
    with storescp(storescp_port, out, accept_all=True):
        _dcmsend(stack, files, LIVE_AE)
        forward, processed = f"forward:live:live-ai:{study}", f"study:live:{study}"
        assert run(wait_completed(s, [processed, forward], timeout=180)) == {
            processed: WorkflowExecutionStatus.COMPLETED,
            forward: WorkflowExecutionStatus.COMPLETED,
        }
    # a study rule's forward starts after the study's last step; this one before its first
    forward_started, first_step = run(_first_forward_start_and_first_study_step(s, forward, processed))
    assert forward_started < first_step, (forward_started, first_step)
    assert {str(ds.SOPInstanceUID) for ds in received(out).values()} == {
        str(dcmread(p, stop_before_pixels=True).SOPInstanceUID) for p in files
    }


async def _first_forward_start_and_first_study_step(s, forward: str, processed: str):
    from temporalio.api.enums.v1 import EventType

    from testkit.temporal_waits import client_for

    client = await client_for(s)
    runs = [w async for w in client.list_workflows(f"WorkflowId = '{forward}'")]
    history = await client.get_workflow_handle(processed).fetch_history()
    steps = (EventType.EVENT_TYPE_MARKER_RECORDED, EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED)
    first_step = next(e.event_time.ToDatetime() for e in history.events if e.event_type in steps)
    return min(r.start_time for r in runs), first_step.replace(tzinfo=UTC)


def test_a_forward_survives_a_killed_worker_and_delivers_every_instance_once(stack, data_dir, storescp_port, tmp_path):
    """SIGKILL of every workflow worker while a 520-instance study is being forwarded: the forward
    resumes on the restarted worker at the first unacknowledged instance; every instance arrives, and
    the index records each as delivered exactly once."""
    import os
    import signal

    import psycopg

    from tests.test_query_retrieve import worker_pids

    files = sorted(p for p in (data_dir / "dcm_qa_toshiba").rglob("*") if p.is_file())  # a real Toshiba MR study
    uids = {str(dcmread(p, stop_before_pixels=True).SOPInstanceUID) for p in files}
    study, s = str(dcmread(files[0], stop_before_pixels=True).StudyInstanceUID), stack.settings
    out = tmp_path / "pacs"
    with storescp(storescp_port, out, accept_all=True):
        _dcmsend(stack, files)
        deadline = time.monotonic() + 300
        while len([p for p in out.glob("*") if p.is_file()]) < 50:
            assert time.monotonic() < deadline, "the forward never started sending"
            time.sleep(0.05)
        before = worker_pids(stack)
        for pid in before:
            os.kill(pid, signal.SIGKILL)  # mid-study: the rest can only go from the restarted worker
        at_kill = len([p for p in out.glob("*") if p.is_file()])
        forward = f"forward:route:mr-to-pacs:{study}"
        assert run(wait_completed(s, [forward], timeout=600)) == {forward: WorkflowExecutionStatus.COMPLETED}
    assert at_kill < len(files), "the worker died while the forward was under way"
    assert set(received(out)) == uids, "every instance reached the destination"
    with psycopg.connect(s.effective_postgres_dsn()) as conn:
        delivered = conn.execute(
            """SELECT ri.sop_uid, count(*) FROM retrieve r JOIN retrieve_item ri ON ri.retrieve_id = r.id
               WHERE r.tenant = 'route' AND r.requested_by = 'forward:mr-to-pacs' AND ri.state = 'completed'
                 AND ri.sop_uid = ANY(%s) GROUP BY 1""",
            (sorted(uids),),
        ).fetchall()
    assert {uid for uid, _ in delivered} == uids and {n for _, n in delivered} == {1}, "an instance delivered twice"
    assert set(worker_pids(stack)).isdisjoint(before), "Ray restarted the worker"


def test_rules_added_and_removed_at_run_time_are_seen_by_every_reader(stack, data_dir, storescp_port, tmp_path):
    """POST /admin/forwarding adds a rule, kept in the index, that the receiving side (when =
    "instance"), the routing step, `dicomflow forward test` and the admin view all see; a tenant's
    administrator manages its own tenant's rules only; DELETE removes it, and the next study goes
    nowhere."""
    from tests.auth import admin_headers
    from tests.conftest import RUNTIME_AE
    from tests.test_durability import new_study

    url, s = stack.url("/admin/forwarding"), stack.settings
    mine, theirs = admin_headers(["rt"]), admin_headers(["route"])
    rule = {"name": "rt-ai", "tenant": "rt", "when": "instance", "match": {"ModalitiesInStudy": "MR"}, "to": {"ae": "STORESCP"}}

    def post(body, headers=mine) -> int:
        return requests.post(url, json=body, headers=headers, timeout=30).status_code

    assert post(rule, theirs) == 403, "another tenant's administrator"
    assert post({**rule, "tenant": None}) == 403, "a rule for every tenant is the operator's"
    assert post({**rule, "name": "mr-to-pacs"}) == 409, "a name the settings file took"
    assert post({**rule, "to": {"ae": "NO_SUCH_AE"}}) == 422
    assert post({**rule, "to": {"ae": "STORESCP_B"}}) == 422, "a destination of tenant tenantb"
    assert post({**rule, "match": {"NoSuchKeyword": "x"}}) == 422
    assert post(rule) == 201
    assert post(rule) == 409
    view = requests.get(url, headers=mine, timeout=30).json()
    assert [(r["name"], r["source"]) for r in view["rules"]] == [("rt-ai", "runtime")], view["rules"]
    assert "rt-ai" not in [r["name"] for r in requests.get(url, headers=theirs, timeout=30).json()["rules"]]

    def stored_study(count: int) -> tuple[str, list, set[str]]:
        files = []
        for number, payload in enumerate(new_study(data_dir, count)):
            files.append(tmp_path / f"{len(list(tmp_path.glob('*.dcm')))}-{number}.dcm")
            files[-1].write_bytes(payload)
        headers = [dcmread(p, stop_before_pixels=True) for p in files]
        return str(headers[0].StudyInstanceUID), files, {str(h.SOPInstanceUID) for h in headers}

    study, files, uids = stored_study(3)
    out = tmp_path / "ai"
    with storescp(storescp_port, out, accept_all=True):
        _dcmsend(stack, files, RUNTIME_AE)
        forward, processed = f"forward:rt:rt-ai:{study}", f"study:rt:{study}"
        assert run(wait_completed(s, [processed, forward], timeout=180)) == {
            processed: WorkflowExecutionStatus.COMPLETED,
            forward: WorkflowExecutionStatus.COMPLETED,
        }
    assert set(received(out)) == uids
    started, first_step = run(_first_forward_start_and_first_study_step(s, forward, processed))
    assert started < first_step, "the receiving side told the forward (when = instance) before the study was processed"
    tried = stack.cli("forward", "test", "rt-ai", study)
    assert tried.returncode == 0 and "0 instance(s)" in tried.stdout, tried.stdout

    assert requests.delete(f"{url}/rt-ai", headers=theirs, timeout=30).status_code == 403
    assert requests.delete(f"{url}/mr-to-pacs", headers=operator_headers(), timeout=30).status_code == 409
    assert requests.delete(f"{url}/rt-ai", headers=mine, timeout=30).status_code == 204
    assert requests.delete(f"{url}/rt-ai", headers=mine, timeout=30).status_code == 404
    assert stack.cli("forward", "test", "rt-ai", study).returncode == 2
    later, files, _ = stored_study(2)
    _dcmsend(stack, files, RUNTIME_AE)
    assert run(wait_completed(s, [f"study:rt:{later}"], timeout=180)) == {f"study:rt:{later}": WorkflowExecutionStatus.COMPLETED}
    assert not run(list_ids(s, f"WorkflowId = 'forward:rt:rt-ai:{later}'")), "a removed rule starts nothing"
    events = requests.get(stack.url("/admin/audit"), params={"tenant": "rt", "limit": 500}, headers=mine, timeout=30).json()
    changes = [e["detail"].get("detail", {}) for e in events if e["event_code"] == 110113 and e["outcome"] == 0]
    assert {"forward_rule_added": "rt-ai"} in [{k: v for k, v in c.items() if k != "event_type"} for c in changes], events[:5]


def test_an_admin_cancels_a_forward_to_a_destination_that_is_down(stack, data_dir, tmp_path):
    """The PACS is down, so two studies' forwards retry; an administrator of the tenant cancels one
    over HTTP and the other with `dicomflow forward cancel`: each ends cancelled in Temporal, its
    round is withdrawn (nothing stays owed by it) and the audit trail says it was cancelled."""
    import psycopg

    from testkit.temporal_waits import client_for
    from tests.auth import admin_headers
    from tests.test_durability import new_study

    studies, files = [], []
    for _ in range(2):
        for number, payload in enumerate(new_study(data_dir, 2)):
            files.append(tmp_path / f"{len(files)}-{number}.dcm")
            files[-1].write_bytes(payload)
        studies.append(str(dcmread(files[-1], stop_before_pixels=True).StudyInstanceUID))
    s = stack.settings
    _dcmsend(stack, files)  # no storescp listens at STORESCP's port
    processed = {f"study:route:{study}": WorkflowExecutionStatus.COMPLETED for study in studies}
    assert run(wait_completed(s, list(processed), timeout=180)) == processed
    time.sleep(3)  # both forwards have met a closed port by now, and retry
    by_http, by_cli = studies
    url = stack.url(f"/admin/forwarding/workflows/route/mr-to-pacs/{by_http}")
    assert requests.delete(url, headers=admin_headers(["rt"]), timeout=30).status_code == 403, "another tenant's administrator"
    answer = requests.delete(url, headers=admin_headers(["route"]), timeout=30)
    assert answer.status_code == 202, answer.text
    cancelled = stack.cli("forward", "cancel", "mr-to-pacs", by_cli)
    assert cancelled.returncode == 0, cancelled.stdout + cancelled.stderr
    forwards = [f"forward:route:mr-to-pacs:{study}" for study in studies]
    assert run(wait_completed(s, forwards, timeout=60)) == dict.fromkeys(forwards, WorkflowExecutionStatus.CANCELED)
    assert requests.delete(url, headers=admin_headers(["route"]), timeout=30).status_code == 409, "it has ended"
    assert stack.cli("forward", "cancel", "mr-to-pacs", "1.2.3.4").returncode == 1, "no such forward"

    async def described():
        client = await client_for(s)
        return [(await client.get_workflow_handle(f).describe()).status for f in forwards]

    assert run(described()) == [WorkflowExecutionStatus.CANCELED] * 2
    uids = [str(dcmread(p, stop_before_pixels=True).SOPInstanceUID) for p in files]
    with psycopg.connect(s.effective_postgres_dsn()) as conn:
        owed = conn.execute(
            """SELECT count(*) FROM retrieve r JOIN retrieve_item ri ON ri.retrieve_id = r.id
               WHERE r.requested_by = 'forward:mr-to-pacs' AND ri.state = 'pending' AND ri.sop_uid = ANY(%s)""",
            (uids,),
        ).fetchone()
    assert owed == (0,), "a cancelled forward's round still owes instances"
    for study in studies:
        events = requests.get(
            stack.url("/admin/audit"), params={"study": study, "limit": 100}, headers=admin_headers(["route"]), timeout=30
        ).json()
        assert [e for e in events if e["source"] == "forward" and e["detail"].get("cancelled")], events[:5]

    async def replayed() -> None:  # the cancelled histories replay in the sandbox, with the patch
        from temporalio.worker import Replayer

        from workflows.forward import ForwardWorkflow

        client = await client_for(s)
        for forward in forwards:
            await Replayer(workflows=[ForwardWorkflow]).replay_workflow(await client.get_workflow_handle(forward).fetch_history())

    run(replayed())


def test_a_copy_rule_puts_the_study_into_another_tenant(stack, data_dir, tmp_path):
    """to = { tenant = "teaching" }: a study stored into tenant copysrc by storescu is received into
    tenant teaching through receipt (no STOW-RS): stored there with its own blobs, found by QIDO-RS
    in that tenant and processed by that tenant's own study workflow. A rule copying a tenant into
    itself or into a tenant the archive does not know is refused, and so is a copy into a tenant
    its administrator does not hold."""
    from dicomweb_client.api import DICOMwebClient

    from tests.auth import admin_headers, auth_headers, bearer
    from tests.conftest import COPY_AE
    from tests.test_durability import new_study

    payloads = new_study(data_dir, 3)
    files = []
    for number, payload in enumerate(payloads):
        files.append(tmp_path / f"{number}.dcm")
        files[-1].write_bytes(payload)
    headers = [dcmread(p, stop_before_pixels=True) for p in files]
    study, uids, s = str(headers[0].StudyInstanceUID), {str(h.SOPInstanceUID) for h in headers}, stack.settings
    sent = subprocess.run(
        ["storescu", "-aet", COPY_AE, "-aec", s.dimse.ae_title, "127.0.0.1", str(s.dimse.port), *map(str, files)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert sent.returncode == 0, sent.stderr[-2000:]
    forward, copied = f"forward:copysrc:to-teaching:{study}", f"study:teaching:{study}"
    assert run(wait_completed(s, [forward], timeout=180)) == {forward: WorkflowExecutionStatus.COMPLETED}
    assert run(wait_completed(s, [copied], timeout=180)) == {copied: WorkflowExecutionStatus.COMPLETED}, "its own study workflow"
    found = requests.get(
        stack.url("/tenants/teaching/dicomweb/studies"),
        params={"StudyInstanceUID": study, "includefield": "NumberOfStudyRelatedInstances"},
        headers=bearer("teaching", ["reader"]),
        timeout=30,
    )
    assert found.status_code == 200 and len(found.json()) == 1, found.text
    assert found.json()[0]["00201208"]["Value"] == [3]
    teaching = DICOMwebClient(url=stack.url("/tenants/teaching/dicomweb"), headers=bearer("teaching", ["reader"]))
    arrived = {str(ds.SOPInstanceUID): ds for ds in teaching.retrieve_study(study)}
    assert set(arrived) == uids
    originals = {str(dcmread(io.BytesIO(p)).SOPInstanceUID): dcmread(io.BytesIO(p)) for p in payloads}
    assert all(arrived[uid].PixelData == originals[uid].PixelData for uid in uids)
    copysrc = requests.get(
        stack.url("/dicomweb/studies"), params={"StudyInstanceUID": study}, headers=auth_headers("copysrc"), timeout=30
    )
    assert len(copysrc.json()) == 1, "the source keeps its study"

    url = stack.url("/admin/forwarding")
    rule = {"name": "copy-back", "tenant": "copysrc", "to": {"tenant": "teaching"}}
    both, source_only = admin_headers(["copysrc", "teaching"]), admin_headers(["copysrc"])
    assert requests.post(url, json={**rule, "to": {"tenant": "copysrc"}}, headers=both, timeout=30).status_code == 422
    unknown = requests.post(
        url, json={**rule, "to": {"tenant": "nowhere"}}, headers=admin_headers(["copysrc", "nowhere"]), timeout=30
    )
    assert unknown.status_code == 422 and "does not know" in unknown.text, unknown.text
    assert requests.post(url, json=rule, headers=source_only, timeout=30).status_code == 403, "not an admin of teaching"
    assert requests.post(url, json=rule, headers=both, timeout=30).status_code == 201
    assert requests.delete(f"{url}/copy-back", headers=both, timeout=30).status_code == 204
