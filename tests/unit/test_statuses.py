"""Standard statuses without a stack: the C-STORE status of each receipt outcome (PS3.4 B.2.3), the
STOW-RS HTTP status (PS3.18 10.5.3.1, 503 for an outage), the Warning header's shape (RFC 7234 5.5)
and which QIDO-RS keys are ignored rather than refused (PS3.18 8.3.4)."""

from __future__ import annotations

import pytest

from archive.dicom import dicom_status as st
from archive.query.builder import BadQuery
from archive.query.qido import build_qido
from archive.services.receipt import Outcome
from serve.errors import warning
from serve.stow import RETRY_AFTER_SECONDS, response_status

# PS3.4 Table B.2-1: the failure statuses a Storage SCP may answer C-STORE with
C_STORE_FAILURE_RANGES = (0xA700, 0xA900, 0xC000)


@pytest.mark.parametrize("outcome", [o for o in Outcome if not o.ok])
def test_every_refusal_is_a_c_store_failure_status(outcome):
    code = st.receipt_status(outcome)
    assert code & 0xFF00 in C_STORE_FAILURE_RANGES or code & 0xF000 == 0xC000, hex(code)
    assert st.failure_status(outcome) == code


def test_conflicting_duplicate_is_a9xx_apart_from_a_misnamed_dataset():
    assert st.receipt_status(Outcome.CONFLICT) & 0xFF00 == 0xA900
    assert st.receipt_status(Outcome.CONFLICT) != st.receipt_status(Outcome.MISMATCH)
    assert all(st.receipt_status(o) == st.SUCCESS for o in Outcome if o.ok)


def test_only_out_of_resources_is_worth_a_retry():
    assert st.is_transient(st.receipt_status(Outcome.FAILED))
    # a tenant over its quota is refused with A700 too: stored later, once the quota grows or data goes,
    # the same object may be taken (STOW-RS answers it 413, serve/stow.py)
    assert st.is_transient(st.receipt_status(Outcome.QUOTA))
    assert not any(st.is_transient(st.receipt_status(o)) for o in Outcome if o not in (Outcome.FAILED, Outcome.QUOTA))


@pytest.mark.parametrize(
    "stored, reasons, status",
    [
        (3, [], 200),
        (1, [0xA901, 0xC000], 202),
        (1, [0xA700], 202),  # something stored: the client reads the reasons per instance
        (0, [0xA901], 409),
        (0, [0xC000, 0xA900], 409),
        (0, [0xA700], 503),
        (0, [0xA700, 0xC000], 503),  # sent again later, the good parts can store
    ],
)
def test_stow_http_status(stored, reasons, status):
    got, headers = response_status(stored, reasons)
    assert got == status
    assert headers == ({"Retry-After": str(RETRY_AFTER_SECONDS)} if status == 503 else {})


def test_warning_text_is_a_quoted_string():
    value = warning("https://pacs.example.org:8443/dicomweb", 'a "quoted" \\ name', "caf\u00e9\r\nX-Injected: 1")
    assert value == ('299 pacs.example.org:8443 "a \\"quoted\\" \\\\ name", 299 pacs.example.org:8443 "caf???X-Injected: 1"')
    assert warning("http://bad host/", "x") == '299 dicomflow "x"'
    assert len(warning("http://h", "y" * 5000)) < 600


def _warnings(**params: str) -> list[str]:
    return build_qido("study", "t", {k: [v] for k, v in params.items()}).warnings


@pytest.mark.parametrize(
    "key", ["NoSuchKeyword", "00091001", "_", "ReferencedStudySequence.StudyInstanceUID", "00400275.00321060"]
)
def test_unsupported_query_keys_are_ignored_and_named(key):
    assert _warnings(**{key: "x", "PatientID": "P1"}) == [f"The following query keys were ignored (not supported): {key}"]


def test_unsupported_includefield_is_ignored_and_named():
    query = build_qido("study", "t", {"includefield": ["00091001,StudyDescription"]})
    assert query.warnings == ["The following query keys were ignored (not supported): includefield=00091001"]
    assert "StudyDescription" in {a.keyword for a in query.returned}


def test_matching_options_not_performed_say_so():
    assert _warnings(multiplevaluematching="true", emptyvaluematching="false") == [
        "The multiplevaluematching parameter is not supported. Multiple Value Matching has not been performed."
    ]


@pytest.mark.parametrize(
    "params, words",
    [
        ({"0020000G": "x"}, "not a tag"),
        ({"00100": "x"}, "not a tag"),
        ({"includefield": "0010001"}, "not a tag"),
        ({"StudyDate": "2020-01-01"}, "not a date"),
        ({"StudyInstanceUID": "1.2/abc"}, "not a valid UID"),
    ],
)
def test_malformed_keys_and_values_are_still_refused(params, words):
    with pytest.raises(BadQuery, match=words):
        build_qido("study", "t", {k: [v] for k, v in params.items()})


def test_the_sender_reads_the_reason_from_the_private_block():
    from cluster.sender.stow import _failures
    from serve.stow import _failed

    item = _failed(None, st.CONFLICTING_DUPLICATE, "already stored with different content: 1.2.3")
    assert item["00090010"] == {"vr": "LO", "Value": ["dicomflow"]}
    body = {"00081198": {"vr": "SQ", "Value": [{**item, "00081155": {"vr": "UI", "Value": ["1.2.3"]}}]}}
    assert _failures(body) == {"1.2.3": "FailureReason 0xA901: already stored with different content: 1.2.3"}
