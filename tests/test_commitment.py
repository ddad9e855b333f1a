"""Storage Commitment Push Model with a pynetdicom SCU that also listens for the N-EVENT-REPORT."""

from __future__ import annotations

import queue
import time

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from pynetdicom import AE, evt
from pynetdicom.sop_class import StorageCommitmentPushModel

from tests.conftest import COMMIT_SCU_AE, TENANT_B_AE
from tests.test_dimse import _store

COMMITMENT_INSTANCE = "1.2.840.10008.1.20.1.1"


@pytest.fixture
def commit_scu(stack, commit_scu_port):
    """The requesting AE: listens on the port the AE table names for it and collects reports."""
    reports: queue.Queue = queue.Queue()

    def on_report(event):
        reports.put((event.event_type, event.event_information))
        return 0x0000, None  # status and (no) event reply

    ae = AE(ae_title=COMMIT_SCU_AE)
    ae.add_supported_context(StorageCommitmentPushModel, scu_role=True, scp_role=True)
    ae.add_requested_context(StorageCommitmentPushModel)
    server = ae.start_server(("127.0.0.1", commit_scu_port), block=False, evt_handlers=[(evt.EVT_N_EVENT_REPORT, on_report)])
    yield ae, reports
    server.shutdown()


def wait_report(reports: queue.Queue, transaction: str, timeout: float):
    """The report for this transaction; a report for another one would be a stray duplicate."""
    event_type, info = reports.get(timeout=timeout)
    assert str(info.TransactionUID) == transaction, "a report arrived for another transaction"
    return event_type, info


def request_commitment(stack, ae: AE, refs: list[tuple[str, str]]) -> str:
    transaction = generate_uid()
    info = Dataset()
    info.TransactionUID = transaction
    info.ReferencedSOPSequence = []
    for sop_class, sop_uid in refs:
        item = Dataset()
        item.ReferencedSOPClassUID = sop_class
        item.ReferencedSOPInstanceUID = sop_uid
        info.ReferencedSOPSequence.append(item)
    assoc = ae.associate("127.0.0.1", stack.settings.dimse.port, ae_title=stack.settings.dimse.ae_title)
    assert assoc.is_established
    try:
        status, _ = assoc.send_n_action(info, 1, StorageCommitmentPushModel, COMMITMENT_INSTANCE)
        assert status.Status == 0x0000
    finally:
        assoc.release()
    return transaction


def send_study(stack, data_dir) -> list[tuple[str, str]]:
    refs = []
    for path in sorted((data_dir / "dcm_qa_nih").rglob("*.dcm")):
        assert _store(stack, path.read_bytes()).Status == 0
        ds = dcmread(path, stop_before_pixels=True)
        refs.append((str(ds.SOPClassUID), str(ds.SOPInstanceUID)))
    return refs


def test_whole_study_committed(stack, data_dir, commit_scu):
    ae, reports = commit_scu
    refs = send_study(stack, data_dir)
    transaction = request_commitment(stack, ae, refs)
    event_type, info = wait_report(reports, transaction, 90)
    assert event_type == 1
    assert {str(i.ReferencedSOPInstanceUID) for i in info.ReferencedSOPSequence} == {uid for _, uid in refs}
    assert "FailedSOPSequence" not in info


def test_unknown_instance_comes_back_failed(stack, data_dir, commit_scu):
    """Issue 31: a reference never received is failed after the 10 s grace, on a new association to
    the AE table's address; before, the report waited for the request's timeout (600 s here)."""
    ae, reports = commit_scu
    refs = send_study(stack, data_dir)
    unknown = (refs[0][0], generate_uid())
    asked = time.monotonic()
    transaction = request_commitment(stack, ae, [*refs, unknown])
    event_type, info = wait_report(reports, transaction, 90)
    print(f"N-ACTION to report, new association: {time.monotonic() - asked:.1f} s")
    assert event_type == 2
    failed = info.FailedSOPSequence
    assert [(str(i.ReferencedSOPInstanceUID), int(i.FailureReason)) for i in failed] == [(unknown[1], 0x0112)]
    assert len(info.ReferencedSOPSequence) == len(refs)


def test_request_without_transaction_uid_is_refused(stack, commit_scu):
    ae, _ = commit_scu
    info = Dataset()
    item = Dataset()
    item.ReferencedSOPClassUID = "1.2.840.10008.5.1.4.1.1.4"
    item.ReferencedSOPInstanceUID = generate_uid()
    info.ReferencedSOPSequence = [item]
    assoc = ae.associate("127.0.0.1", stack.settings.dimse.port, ae_title=stack.settings.dimse.ae_title)
    try:
        status, _ = assoc.send_n_action(info, 1, StorageCommitmentPushModel, COMMITMENT_INSTANCE)
    finally:
        assoc.release()
    assert status.Status == 0x0120


def test_request_from_an_ae_without_an_address_is_refused_up_front(stack, data_dir):
    """NOSTORE may ask for commitment but has no host/port in the AE table: the report could never be
    delivered, so the N-ACTION itself fails with a reason instead of being accepted and never answered."""
    from tests.conftest import NOSTORE_AE

    ae = AE(ae_title=NOSTORE_AE)
    ae.add_requested_context(StorageCommitmentPushModel)
    info = Dataset()
    info.TransactionUID = generate_uid()
    item = Dataset()
    item.ReferencedSOPClassUID, item.ReferencedSOPInstanceUID = "1.2.840.10008.5.1.4.1.1.4", generate_uid()
    info.ReferencedSOPSequence = [item]
    assoc = ae.associate("127.0.0.1", stack.settings.dimse.port, ae_title=stack.settings.dimse.ae_title)
    assert assoc.is_established
    try:
        status, _ = assoc.send_n_action(info, 1, StorageCommitmentPushModel, COMMITMENT_INSTANCE)
    finally:
        assoc.release()
    assert status.Status == 0x0110 and "no address for NOSTORE" in status.ErrorComment


def test_report_comes_on_the_still_open_association(stack, data_dir):
    """A modality that stores, asks for commitment and waits on the same association gets the
    N-EVENT-REPORT on it once its instances are committed. TENANT_B's address in the AE table is a
    closed port: the report can only have come this way, and the workflow ends without sending."""
    import io

    from testkit.temporal_waits import wait_completed
    from tests.test_durability import new_study

    datasets = [dcmread(io.BytesIO(p)) for p in new_study(data_dir, 3)]
    on_this_association: queue.Queue = queue.Queue()
    assoc = _open_association(stack, datasets, on_this_association)
    try:
        for ds in datasets:
            assert assoc.send_c_store(ds).Status == 0
        transaction = _n_action(assoc, [(str(d.SOPClassUID), str(d.SOPInstanceUID)) for d in datasets])
        event_type, report = on_this_association.get(timeout=90)
    finally:
        assoc.release()
    assert event_type == 1 and str(report.TransactionUID) == transaction
    assert {str(i.ReferencedSOPInstanceUID) for i in report.ReferencedSOPSequence} == {str(d.SOPInstanceUID) for d in datasets}
    from temporalio.client import WorkflowExecutionStatus

    from tests.conftest import run

    wid = f"commit:tenantb:{transaction}"
    assert run(wait_completed(stack.settings, [wid], timeout=60))[wid] == WorkflowExecutionStatus.COMPLETED


def _open_association(stack, datasets, reports: queue.Queue):
    def on_report(event):
        reports.put((event.event_type, event.event_information))
        return 0x0000, None

    ae = AE(ae_title=TENANT_B_AE)  # its AE-table address is a closed port: a report can only come on this association
    ae.add_requested_context(StorageCommitmentPushModel)
    ae.add_requested_context(datasets[0].SOPClassUID, datasets[0].file_meta.TransferSyntaxUID)
    assoc = ae.associate(
        "127.0.0.1",
        stack.settings.dimse.port,
        ae_title=stack.settings.dimse.ae_title,
        evt_handlers=[(evt.EVT_N_EVENT_REPORT, on_report)],
    )
    assert assoc.is_established
    return assoc


def _n_action(assoc, refs: list[tuple[str, str]]) -> str:
    transaction = generate_uid()
    info = Dataset()
    info.TransactionUID = transaction
    info.ReferencedSOPSequence = []
    for sop_class, sop_uid in refs:
        item = Dataset()
        item.ReferencedSOPClassUID, item.ReferencedSOPInstanceUID = sop_class, sop_uid
        info.ReferencedSOPSequence.append(item)
    status, _ = assoc.send_n_action(info, 1, StorageCommitmentPushModel, COMMITMENT_INSTANCE)
    assert status.Status == 0
    return transaction


def test_a_never_received_instance_fails_on_the_open_association_after_the_grace(stack, data_dir):
    """Issue 31, as a modality waits: stored instances and one never sent, asked on the association
    the modality keeps open; the report comes there, the stored ones committed, the other 0112."""
    import io

    from tests.test_durability import new_study

    datasets = [dcmread(io.BytesIO(p)) for p in new_study(data_dir, 3)]
    reports: queue.Queue = queue.Queue()
    assoc = _open_association(stack, datasets, reports)
    try:
        for ds in datasets:
            assert assoc.send_c_store(ds).Status == 0
        never_sent = (str(datasets[0].SOPClassUID), generate_uid())
        asked = time.monotonic()
        transaction = _n_action(assoc, [*[(str(d.SOPClassUID), str(d.SOPInstanceUID)) for d in datasets], never_sent])
        event_type, report = reports.get(timeout=90)
        print(f"N-ACTION to report, open association: {time.monotonic() - asked:.1f} s")
    finally:
        assoc.release()
    assert event_type == 2 and str(report.TransactionUID) == transaction
    assert {str(i.ReferencedSOPInstanceUID) for i in report.ReferencedSOPSequence} == {str(d.SOPInstanceUID) for d in datasets}
    assert [(str(i.ReferencedSOPInstanceUID), int(i.FailureReason)) for i in report.FailedSOPSequence] == [
        (never_sent[1], 0x0112)
    ]


def test_an_instance_received_within_the_grace_is_reported_committed(stack, data_dir):
    """The race the grace is for: the N-ACTION names an instance whose C-STORE comes a moment later."""
    import io

    from tests.test_durability import new_study

    datasets = [dcmread(io.BytesIO(p)) for p in new_study(data_dir, 2)]
    reports: queue.Queue = queue.Queue()
    assoc = _open_association(stack, datasets, reports)
    try:
        assert assoc.send_c_store(datasets[0]).Status == 0
        transaction = _n_action(assoc, [(str(d.SOPClassUID), str(d.SOPInstanceUID)) for d in datasets])
        time.sleep(2)  # well inside the 10 s grace
        assert assoc.send_c_store(datasets[1]).Status == 0
        event_type, report = reports.get(timeout=90)
    finally:
        assoc.release()
    assert event_type == 1 and str(report.TransactionUID) == transaction
    assert {str(i.ReferencedSOPInstanceUID) for i in report.ReferencedSOPSequence} == {str(d.SOPInstanceUID) for d in datasets}
    assert "FailedSOPSequence" not in report
