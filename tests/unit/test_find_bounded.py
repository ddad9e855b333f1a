"""A C-FIND answer is bounded in memory (dimse/qr_scu.find): a source that answers without end, here
a real pynetdicom SCP whose handler would yield a million studies, is sent a C-CANCEL past the bound;
what was kept is returned, marked cancelled, and the association stays usable for the next query."""

from __future__ import annotations

from collections.abc import Iterator

from pydicom.dataset import Dataset
from pynetdicom import AE, evt
from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind  # type: ignore[attr-defined]

from archive.config.peers import AEEntry
from dimse.qr_scu import CANCEL, SUCCESS, find, open_qr_association
from dimse.store_scu import release
from testkit.running_stack import free_port


def _endless(event: evt.Event) -> Iterator[tuple[int, Dataset | None]]:
    query = event.identifier
    total = 1_000_000 if query.StudyDate == "20190301" else 3
    for number in range(total):
        if event.is_cancelled:
            yield 0xFE00, None
            return
        answer = Dataset()
        answer.QueryRetrieveLevel, answer.StudyInstanceUID = "STUDY", f"1.2.3.{number}"
        yield 0xFF00, answer


def _query(day: str) -> Dataset:
    ds = Dataset()
    ds.QueryRetrieveLevel, ds.StudyDate, ds.StudyInstanceUID = "STUDY", day, ""
    return ds


def test_an_endless_answer_is_cancelled_past_the_bound_and_the_association_goes_on():
    port = free_port()
    scp = AE(ae_title="ENDLESS")
    scp.add_supported_context(StudyRootQueryRetrieveInformationModelFind)
    server = scp.start_server(("127.0.0.1", port), block=False, evt_handlers=[(evt.EVT_C_FIND, _endless)])
    try:
        assoc = open_qr_association("DICOMFLOW", "ENDLESS", AEEntry(host="127.0.0.1", port=port), 30.0, None)
        try:
            cut = find(assoc, _query("20190301"), max_answers=200)
            assert cut.status == CANCEL and len(cut.identifiers) == 200
            after = find(assoc, _query("20190302"), max_answers=200)
            assert after.status == SUCCESS and len(after.identifiers) == 3
        finally:
            release(assoc)
    finally:
        server.shutdown()
