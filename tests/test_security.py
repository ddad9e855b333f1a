"""Identity on every surface, with a real OIDC issuer (testkit/oidc_issuer.py) and real clients:
no token -> 401, wrong tenant -> 403 (header) or 404 (another tenant's UID), missing role -> 403,
right token -> works, under /dicomweb and /tenants/{tenant}/dicomweb; the issuer's keys come from
Redis after the first fetch; the AE table gates DIMSE; every access leaves an audit event."""

from __future__ import annotations

import io
import json
import re
import subprocess
import time
from pathlib import Path

import psycopg
import pytest
import requests
from dicomweb_client.api import DICOMwebClient
from pydicom import dcmread
from pydicom.filewriter import dcmwrite
from pydicom.uid import generate_uid
from pynetdicom import AE
from pynetdicom.pdu_primitives import UserIdentityNegotiation
from pynetdicom.sop_class import CTImageStorage

from testkit.running_stack import RunningStack, stack_overrides
from tests.auth import AUDIENCE, admin_headers, bearer, issuer, operator_headers, stack_auth_settings, token
from tests.conftest import NOSTORE_AE, REFETCH_SECONDS, STORE_AE, WORKSTATION_AE

TENANT = "secure"
OTHER = "secureother"


def _restamped(data_dir: Path, study_uid: str | None = None) -> tuple[bytes, dict[str, str]]:
    ds = dcmread(next((data_dir / "dcm_qa_nih").rglob("*.dcm")))
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.StudyInstanceUID = study_uid or generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    out = io.BytesIO()
    dcmwrite(out, ds, enforce_file_format=True)
    return out.getvalue(), {"study": ds.StudyInstanceUID, "series": ds.SeriesInstanceUID, "instance": ds.SOPInstanceUID}


@pytest.fixture(scope="module")
def stored(stack, data_dir) -> dict[str, str]:
    """One instance in TENANT, stored by dicomweb-client with a writer's bearer token."""
    payload, uids = _restamped(data_dir)
    client = DICOMwebClient(url=stack.url("/dicomweb"), headers=bearer(TENANT, ["writer"]))
    response = client.store_instances(datasets=[dcmread(io.BytesIO(payload))])
    assert "FailedSOPSequence" not in response
    return uids


def _read_paths(u: dict[str, str]) -> list[str]:
    inst = f"/studies/{u['study']}/series/{u['series']}/instances/{u['instance']}"
    return [
        "/studies",
        f"/studies/{u['study']}/series",
        f"/studies/{u['study']}/metadata",
        f"/studies/{u['study']}",
        inst,
        inst + "/metadata",
        inst + "/frames/1",
        inst + "/rendered",
        inst + "/thumbnail",
        inst + "/bulkdata/7FE00010",
        f"/wado?requestType=WADO&studyUID={u['study']}&seriesUID={u['series']}&objectUID={u['instance']}",
    ]


ROOTS = ["/dicomweb", f"/tenants/{TENANT}/dicomweb"]


@pytest.mark.parametrize("root", ROOTS)
def test_no_token_is_401_with_a_bearer_challenge(stack, stored, root):
    for path in _read_paths(stored) + ["/capabilities"]:
        response = requests.get(stack.url(root + path), timeout=30)
        assert response.status_code == 401, path
        assert response.headers["WWW-Authenticate"].startswith("Bearer"), path
        assert "token" in response.json()["error"]
    assert requests.post(stack.url(root + "/studies"), data=b"", timeout=30).status_code == 401
    assert requests.delete(stack.url(root + f"/studies/{stored['study']}"), timeout=30).status_code == 401


@pytest.mark.parametrize(
    "make, reason",
    [
        (lambda: issuer().token("t", tenants=[TENANT], roles=["reader"], audience=AUDIENCE, expires_in=-120), "expired"),
        (lambda: issuer().token("t", tenants=[TENANT], roles=["reader"], audience="someone-else"), "audience"),
        (
            lambda: issuer().token("t", tenants=[TENANT], roles=["reader"], audience=AUDIENCE, issuer="http://evil.example"),
            "issuer",
        ),
        (lambda: issuer().foreign_token(subject="t", tenants=[TENANT], roles=["reader"], audience=AUDIENCE), "key"),
        (lambda: issuer().token("t", tenants=[TENANT], roles=["reader"], audience=AUDIENCE, not_before=600), "not valid yet"),
        (lambda: "not.a.jwt", "JWT"),
    ],
)
def test_bad_tokens_are_401_with_the_reason(stack, stored, make, reason):
    response = requests.get(stack.url("/dicomweb/studies"), headers={"Authorization": f"Bearer {make()}"}, timeout=30)
    assert response.status_code == 401
    assert reason.lower() in response.json()["error"].lower() and "invalid_token" in response.headers["WWW-Authenticate"]


@pytest.mark.parametrize("root", ROOTS)
def test_right_token_reads_everything(stack, stored, root):
    for path in _read_paths(stored):
        headers = {**bearer(TENANT, ["reader"]), "Accept": "*/*"}
        response = requests.get(stack.url(root + path), headers=headers, timeout=30)
        assert response.status_code in (200, 206), (path, response.status_code, response.text[:200])
    found = requests.get(stack.url(root + "/studies"), headers=bearer(TENANT, ["reader"]), timeout=30).json()
    assert [s["0020000D"]["Value"][0] for s in found] == [stored["study"]]


def test_dicomweb_client_with_a_bearer_token_under_the_tenant_root(stack, stored):
    client = DICOMwebClient(url=stack.url(f"/tenants/{TENANT}/dicomweb"), headers=bearer(TENANT, ["reader"]))
    assert [s["0020000D"]["Value"][0] for s in client.search_for_studies()] == [stored["study"]]
    (instance,) = client.retrieve_series(stored["study"], stored["series"])
    assert str(instance.SOPInstanceUID) == stored["instance"]


def test_a_tenant_the_token_does_not_list_is_403(stack, stored):
    reader_of_other = bearer(OTHER, ["reader"])
    for root, extra in ((f"/tenants/{TENANT}/dicomweb", {}), ("/dicomweb", {"x-tenant": TENANT})):
        response = requests.get(stack.url(root + "/studies"), headers={**reader_of_other, **extra}, timeout=30)
        assert response.status_code == 403 and TENANT in response.json()["error"]


def test_another_tenants_uids_are_404(stack, stored):
    for path in _read_paths(stored)[2:]:
        response = requests.get(stack.url("/dicomweb" + path), headers=bearer(OTHER, ["reader", "deleter"]), timeout=30)
        assert response.status_code == 404, path
    gone = requests.delete(stack.url(f"/dicomweb/studies/{stored['study']}"), headers=bearer(OTHER, ["deleter"]), timeout=30)
    assert gone.status_code == 404


def test_header_and_url_tenant_must_agree(stack, stored):
    headers = {**bearer(TENANT), "x-tenant": OTHER}
    assert requests.get(stack.url(f"/tenants/{TENANT}/dicomweb/studies"), headers=headers, timeout=30).status_code == 400


def test_a_token_with_several_tenants_must_name_one(stack, stored):
    both = {"Authorization": f"Bearer {token([TENANT, OTHER], ['reader'])}"}
    assert requests.get(stack.url("/dicomweb/studies"), headers=both, timeout=30).status_code == 400
    assert requests.get(stack.url("/dicomweb/studies"), headers={**both, "x-tenant": TENANT}, timeout=30).status_code == 200


def test_missing_role_is_403(stack, stored, data_dir):
    payload, _ = _restamped(data_dir)
    body = b"--b\r\nContent-Type: application/dicom\r\n\r\n" + payload + b"\r\n--b--\r\n"
    stow_type = {"Content-Type": 'multipart/related; type="application/dicom"; boundary=b'}
    reader = bearer(TENANT, ["reader"])
    writer = bearer(TENANT, ["writer"])
    assert (
        requests.post(stack.url("/dicomweb/studies"), data=body, headers={**reader, **stow_type}, timeout=30).status_code == 403
    )
    assert requests.get(stack.url("/dicomweb/studies"), headers=writer, timeout=30).status_code == 403
    assert requests.delete(stack.url(f"/dicomweb/studies/{stored['study']}"), headers=reader, timeout=30).status_code == 403
    assert requests.get(stack.url("/admin/audit"), headers=reader, timeout=30).status_code == 403
    denied = requests.get(stack.url(f"/dicomweb/studies/{stored['study']}/metadata"), headers=writer, timeout=30)
    assert denied.status_code == 403 and "reader" in denied.json()["error"]


def test_cors_allows_only_the_configured_origin(stack):
    preflight = requests.options(
        stack.url("/dicomweb/studies"),
        headers={"Origin": "http://evil.example", "Access-Control-Request-Method": "DELETE"},
        timeout=30,
    )
    assert "access-control-allow-origin" not in {k.lower() for k in preflight.headers}


def _redis_keys(settings, pattern: str) -> list[bytes]:
    import redis

    return list(redis.Redis.from_url(settings.effective_redis_url()).scan_iter(match=pattern))


def test_keys_come_from_redis_and_a_rotated_key_is_picked_up(stack, stored):
    reader = bearer(TENANT, ["reader"])
    assert requests.get(stack.url("/dicomweb/studies"), headers=reader, timeout=30).status_code == 200
    assert _redis_keys(stack.settings, "dicomflow-auth:jwks:*"), "the issuer's keys are not cached in Redis"
    issuer().reset_hits()
    for _ in range(20):
        assert requests.get(stack.url("/dicomweb/studies"), headers=reader, timeout=30).status_code == 200
    assert issuer().jwks_hits <= 1, "requests went to the issuer although its keys were cached (one refresh may fall due)"
    time.sleep(REFETCH_SECONDS + 0.5)  # earlier tests' unknown key ids may have used this window's refetch
    issuer().rotate()
    rotated = issuer().token("rotated", tenants=[TENANT], roles=["reader"], audience=AUDIENCE)
    assert (
        requests.get(stack.url("/dicomweb/studies"), headers={"Authorization": f"Bearer {rotated}"}, timeout=30).status_code
        == 200
    )
    assert issuer().jwks_hits == 1, "the new key was not fetched exactly once"
    fetched = time.monotonic()
    for _ in range(25):  # a flood of made-up key ids may reach the issuer at most once per refetch window
        bogus = issuer().unknown_kid_token(subject="x", tenants=[TENANT], roles=["reader"], audience=AUDIENCE)
        assert (
            requests.get(stack.url("/dicomweb/studies"), headers={"Authorization": f"Bearer {bogus}"}, timeout=30).status_code
            == 401
        )
    windows = int((time.monotonic() - fetched) // REFETCH_SECONDS) + 1
    # per window: one refetch for an unknown key id, and the two refreshes that keep keys fresh
    assert issuer().jwks_hits <= 1 + 3 * windows, f"{issuer().jwks_hits} fetches for 25 bogus tokens in {windows} windows"


def _status_with(stack, bearer_token: str) -> int:
    return requests.get(
        stack.url("/dicomweb/studies"), headers={"Authorization": f"Bearer {bearer_token}"}, timeout=30
    ).status_code


def test_a_withdrawn_signing_key_stops_working_within_the_refetch_time(stack, stored):
    """Issue 27 item 8: a key the issuer withdrew kept verifying until the JWKS TTL (an hour)."""
    from testkit.oidc_issuer import SigningKey

    time.sleep(REFETCH_SECONDS + 0.5)  # this window's refetch for an unknown key id is ours
    key = issuer().publish(SigningKey.generate("RS256"))
    signed = issuer().token("withdrawn", tenants=[TENANT], roles=["reader"], audience=AUDIENCE, key=key)
    assert _status_with(stack, signed) == 200
    issuer().withdraw(key)
    withdrawn = time.monotonic()
    while _status_with(stack, signed) == 200:
        assert time.monotonic() - withdrawn < 2 * REFETCH_SECONDS + 5, "the withdrawn key still verifies"
        time.sleep(0.5)


def test_keys_planted_in_redis_do_not_verify_tokens(stack, stored):
    """Issue 27 item 8: whoever could write Redis could plant a key set and forge any token."""
    import json

    import redis

    from archive.identity.jwks import JwksCache
    from testkit.oidc_issuer import SigningKey

    forger = SigningKey.generate("RS256")
    forged = issuer().token("forger", tenants=[TENANT], roles=["reader", "admin"], audience=AUDIENCE, key=forger)
    planted = {"keys": [*issuer().jwks()["keys"], forger.public_jwk()]}
    body = json.dumps({"fetched_at": time.time(), "jwks": planted}, sort_keys=True)
    client = redis.Redis.from_url(stack.settings.effective_redis_url())
    key = JwksCache._key("jwks", issuer().issuer)
    for entry in (json.dumps(planted), json.dumps({"body": body, "mac": "0" * 64})):  # the old format, and a guessed MAC
        client.set(key, entry, ex=3600)
        assert _status_with(stack, forged) == 401
    assert _status_with(stack, issuer().token("after", tenants=[TENANT], roles=["reader"], audience=AUDIENCE)) == 200


# -- DIMSE -----------------------------------------------------------------------------------------


def _associate(stack, calling_ae: str, contexts: list, identity: str | None = None):
    ae = AE(ae_title=calling_ae)
    ae.acse_timeout = ae.network_timeout = 15
    for context in contexts:
        ae.add_requested_context(*context)
    ext = []
    if identity is not None:
        item = UserIdentityNegotiation()
        item.user_identity_type = 5
        item.primary_field = identity.encode()
        ext.append(item)
    return ae.associate("127.0.0.1", stack.settings.dimse.port, ae_title=stack.settings.dimse.ae_title, ext_neg=ext)


def _store_with(stack, calling_ae: str, payload: bytes, identity: str | None = None):
    ds = dcmread(io.BytesIO(payload))
    assoc = _associate(stack, calling_ae, [(ds.SOPClassUID, ds.file_meta.TransferSyntaxUID)], identity)
    if not assoc.is_established:
        return assoc, None
    try:
        return assoc, assoc.send_c_store(ds)
    finally:
        assoc.release()


def _tenant_of(settings, sop_uid: str) -> list[tuple]:
    with psycopg.connect(settings.effective_postgres_dsn()) as conn:
        return conn.execute("SELECT tenant FROM instance WHERE sop_uid = %s", (sop_uid,)).fetchall()


def test_unknown_calling_ae_is_rejected_with_calling_ae_not_recognized(stack, data_dir):
    payload, uids = _restamped(data_dir)
    assoc, _ = _store_with(stack, "STRANGER", payload)
    assert assoc.is_rejected
    assert (assoc.acceptor.primitive.result_source, assoc.acceptor.primitive.diagnostic) == (1, 3)
    assert _tenant_of(stack.settings, uids["instance"]) == []
    result = subprocess.run(
        [
            "storescu",
            "-aet",
            "STRANGER",
            "-aec",
            stack.settings.dimse.ae_title,
            "127.0.0.1",
            str(stack.settings.dimse.port),
            str(next((data_dir / "dcm_qa_nih").rglob("*.dcm"))),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0 and "Calling AE Title Not Recognized" in result.stdout + result.stderr


def test_echo_from_an_unknown_ae_is_answered(stack):
    result = subprocess.run(
        ["echoscu", "-aet", "MONITOR", "-aec", stack.settings.dimse.ae_title, "127.0.0.1", str(stack.settings.dimse.port)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr


def test_one_host_cannot_hold_every_association(stack):
    """Each SCP process gives one peer address at most dimse_max_associations_per_peer; more are
    rejected-transient by the provider, local limit exceeded (PS3.8 7.1.1.9), and a slot given
    back can be taken again. echoscu's own association still works after."""
    settings = stack.settings
    ceiling = settings.dimse.max_associations_per_peer * settings.cluster.scp_processes
    ae = AE(ae_title="MONITOR")
    ae.add_requested_context("1.2.840.10008.1.1")
    opened = [ae.associate("127.0.0.1", settings.dimse.port, ae_title=settings.dimse.ae_title) for _ in range(ceiling + 4)]
    try:
        accepted = [a for a in opened if a.is_established]
        rejected = [a for a in opened if a.is_rejected]
        assert settings.dimse.max_associations_per_peer <= len(accepted) <= ceiling
        assert len(accepted) + len(rejected) == len(opened) and rejected
        for assoc in rejected:
            rj = assoc.acceptor.primitive
            assert (rj.result, rj.result_source, rj.diagnostic) == (2, 3, 2)
    finally:
        for assoc in opened:
            if assoc.is_established:
                assoc.release()
    again = ae.associate("127.0.0.1", settings.dimse.port, ae_title=settings.dimse.ae_title)
    assert again.is_established
    again.release()
    result = subprocess.run(
        ["echoscu", "-aet", "MONITOR", "-aec", settings.dimse.ae_title, "127.0.0.1", str(settings.dimse.port)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr


def test_known_ae_from_a_wrong_host_is_rejected(stack, data_dir):
    payload, _ = _restamped(data_dir)
    assoc, _ = _store_with(stack, WORKSTATION_AE, payload)  # allowed only from 10.99.0.0/16
    assert assoc.is_rejected and assoc.acceptor.primitive.diagnostic == 3


def test_a_service_the_ae_may_not_use_is_refused(stack, data_dir):
    payload, uids = _restamped(data_dir)
    _, status = _store_with(stack, NOSTORE_AE, payload)
    assert status.Status == 0x0124 and "may not use store" in status.ErrorComment
    assert _tenant_of(stack.settings, uids["instance"]) == []


def test_jwt_user_identity_selects_the_tenant(stack, data_dir):
    payload, uids = _restamped(data_dir)
    _, status = _store_with(stack, STORE_AE, payload, identity=token(["jwttenant"], ["writer"], subject="modality-svc"))
    assert status.Status == 0
    assert _tenant_of(stack.settings, uids["instance"]) == [("jwttenant",)]
    reader_only = token(["jwttenant"], ["reader"])
    payload, uids = _restamped(data_dir)
    _, status = _store_with(stack, STORE_AE, payload, identity=reader_only)
    assert status.Status == 0x0124 and _tenant_of(stack.settings, uids["instance"]) == []


def test_an_invalid_jwt_user_identity_is_rejected(stack, data_dir):
    payload, _ = _restamped(data_dir)
    expired = issuer().token("m", tenants=["jwttenant"], roles=["writer"], audience=AUDIENCE, expires_in=-300)
    assoc, _ = _store_with(stack, STORE_AE, payload, identity=expired)
    assert assoc.is_rejected


# -- audit -----------------------------------------------------------------------------------------


def _audit(stack, **params) -> list[dict]:
    response = requests.get(stack.url("/admin/audit"), params={"limit": 5000, **params}, headers=operator_headers(), timeout=30)
    assert response.status_code == 200, response.text
    return response.json()


def _wait_for(stack, predicate, **params) -> list[dict]:
    deadline = time.monotonic() + 20
    while True:
        events = _audit(stack, **params)
        if predicate(events) or time.monotonic() > deadline:
            return events
        time.sleep(0.5)


def test_every_access_kind_leaves_an_audit_event(stack, stored, data_dir):
    reader = bearer(TENANT, ["reader"])
    requests.get(stack.url("/dicomweb/studies"), params={"PatientID": "X*"}, headers=reader, timeout=30)
    requests.get(stack.url(f"/dicomweb/studies/{stored['study']}/metadata"), headers=reader, timeout=30)
    requests.get(stack.url("/dicomweb/studies"), timeout=30)  # no token
    requests.get(stack.url("/dicomweb/studies"), headers={**reader, "x-tenant": OTHER}, timeout=30)  # not its tenant
    payload, uids = _restamped(data_dir)
    _store_with(stack, STORE_AE, payload, identity=token([TENANT], ["writer"], subject="audited-modality"))
    _store_with(stack, "STRANGER", payload)
    deleter = bearer(TENANT, ["deleter"])
    assert requests.delete(stack.url(f"/dicomweb/studies/{uids['study']}"), headers=deleter, timeout=30).status_code == 204

    wanted = {110112, 110103, 110104, 110105, 110114, 110113}

    def written(events: list[dict]) -> bool:  # this test's own events, not earlier tests' (the writer runs every 0.5 s)
        return (
            wanted <= {e["event_code"] for e in events}
            and any(e["event_code"] == 110105 and e["study_uid"] == uids["study"] for e in events)
            and any(e["event_code"] == 110104 and e["source"] == "dimse" and e["study_uid"] == uids["study"] for e in events)
            and any(e["detail"].get("query", {}).get("PatientID") == "X*" for e in events)
        )

    events = _wait_for(stack, written)
    codes = {e["event_code"] for e in events}
    assert wanted <= codes, f"missing audit event codes {wanted - codes}"
    query = next(e for e in events if e["event_code"] == 110112 and e["detail"].get("query", {}).get("PatientID") == "X*")
    assert query["subject"] == "tester" and query["tenant"] == TENANT and query["peer"] == "127.0.0.1" and query["outcome"] == 0
    read = next(e for e in events if e["event_code"] == 110103 and e["study_uid"] == stored["study"])
    assert read["action"] == "R" and read["source"] == "dicomweb"
    dimse_store = next(
        e for e in events if e["event_code"] == 110104 and e["source"] == "dimse" and e["study_uid"] == uids["study"]
    )
    assert dimse_store["subject"] == "audited-modality" and dimse_store["detail"]["instances"] == 1
    assert any(e["event_code"] == 110105 and e["study_uid"] == uids["study"] and e["action"] == "D" for e in events)
    assert any(e["event_code"] == 110114 and e["outcome"] != 0 and e["subject"] == "unauthenticated" for e in events)
    assert any(e["event_code"] == 110114 and e["detail"].get("calling_ae") == "STRANGER" and e["outcome"] != 0 for e in events)
    assert any(e["event_code"] == 110113 and e["tenant"] is None and e["detail"]["status"] == 403 for e in events)
    by_study = _audit(stack, study=uids["study"])
    assert by_study and all(e["study_uid"] == uids["study"] for e in by_study)


def test_a_client_cannot_choose_its_audited_address(stack, stored):
    """Issue 27 item 7: HAProxy passed a client's X-Forwarded-For to uvicorn, which trusts it from
    127.0.0.1, so the audit trail recorded a peer of the client's choosing."""
    marker = f"XFF{time.monotonic_ns()}*"
    spoofed = {**bearer(TENANT, ["reader"]), "X-Forwarded-For": "203.0.113.9"}
    assert (
        requests.get(stack.url("/dicomweb/studies"), params={"PatientID": marker}, headers=spoofed, timeout=30).status_code == 200
    )
    events = _wait_for(stack, lambda ev: any(e["detail"].get("query", {}).get("PatientID") == marker for e in ev), tenant=TENANT)
    query = next(e for e in events if e["detail"].get("query", {}).get("PatientID") == marker)
    assert query["peer"] == "127.0.0.1"


def test_a_flood_of_unauthenticated_requests_is_counted_not_written_one_by_one(stack):
    """Issue 27 item 7: every 401 became an audit row, so a client without a token could fill the
    audit queue. Past a small rate per peer they are counted into one summary event."""
    from datetime import UTC, datetime

    since = datetime.now(UTC).isoformat()
    with requests.Session() as session:
        for _ in range(200):
            assert session.get(stack.url("/dicomweb/studies"), timeout=30).status_code == 401

    def summarised(events: list[dict]) -> bool:
        return sum(e["detail"].get("suppressed", 0) for e in events) >= 200 - 20

    events = [
        e for e in _wait_for(stack, summarised, since=since) if e["event_code"] == 110114 and e["subject"] == "unauthenticated"
    ]
    assert summarised(events), events[-3:]
    assert len(events) < 50, f"{len(events)} failed-login rows for 200 requests"


def test_an_admin_reads_only_its_own_tenants_audit_trail(stack, stored):
    """Issue 27 item 6: an admin token of one tenant read every tenant's audit trail."""
    reader_of_other = bearer(OTHER, ["reader"])
    requests.get(stack.url("/dicomweb/studies"), headers=reader_of_other, timeout=30)  # an event of tenant OTHER
    _wait_for(stack, lambda ev: bool(ev), tenant=OTHER)
    _wait_for(stack, lambda ev: bool(ev), tenant=TENANT)
    admin = admin_headers([TENANT])
    own = requests.get(stack.url("/admin/audit"), params={"limit": 5000}, headers=admin, timeout=30)
    assert own.status_code == 200, own.text
    assert own.json() and {e["tenant"] for e in own.json()} == {TENANT}
    other = requests.get(stack.url("/admin/audit"), params={"tenant": OTHER}, headers=admin, timeout=30)
    assert other.status_code == 403 and "operator" in other.json()["error"]
    everyone = {e["tenant"] for e in _audit(stack)}  # the operator's view
    assert {TENANT, OTHER} <= everyone


def test_audit_cli_and_append_only_table(stack, stored):
    _wait_for(stack, lambda ev: bool(ev), tenant=TENANT)
    result = stack.cli("audit", "--tenant", TENANT, "--json", "--limit", "20")
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert lines and all(e["tenant"] == TENANT for e in lines)
    tampering = ("UPDATE audit_event SET subject = 'someone'", "DELETE FROM audit_event", "TRUNCATE audit_event")
    with psycopg.connect(stack.settings.effective_postgres_dsn()) as conn:  # the role every archive process uses
        assert conn.execute("SELECT count(*) FROM audit_event").fetchone()[0] > 0
        conn.execute("INSERT INTO tenant (name) VALUES ('audit-grant-probe') ON CONFLICT DO NOTHING")  # it writes the index
        conn.rollback()
        maintain = "SELECT has_table_privilege(current_user, %s, 'MAINTAIN')"  # ANALYZE after a bulk import, without the owner
        assert conn.execute(maintain, ("study",)).fetchone() == (True,)
        assert conn.execute(maintain, ("audit_event",)).fetchone() == (False,)
        for statement in tampering:
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(statement)
            conn.rollback()
    # the owner (a superuser: it could drop the trigger) has no password once `up` has migrated, so no
    # archive process can become it (issue 27 item 7); the owner meets the trigger too
    # (tests/test_index_and_cache.py, on a server of its own)
    assert not (stack.settings.var_path / "secrets" / "postgres_password").exists()
    with pytest.raises(psycopg.OperationalError, match="password"):
        psycopg.connect(stack.settings.effective_postgres_owner_dsn(), connect_timeout=5)


# -- closed by default -----------------------------------------------------------------------------


def test_auth_none_refuses_a_non_loopback_bind_host(tmp_path):
    idle = RunningStack(stack_overrides(tmp_path / "var", bind_host="0.0.0.0", auth="none"), tmp_path / "up.log")
    result = idle.cli("up", timeout=60)
    assert result.returncode == 2
    assert "auth = 'none'" in result.stderr and "bind_host" in result.stderr and "DICOMFLOW_AUTH" in result.stderr


def test_nothing_listens_beyond_loopback(stack):
    """Every listening socket of every process `dicomflow up` started is on 127.0.0.1, the Serve
    replica's inter-deployment gRPC port included (Ray hard-codes `[::]`; rayfence/replica_grpc.py)."""
    import psutil

    exposed = []
    for proc in [psutil.Process(stack.process.pid), *stack.descendants()]:
        try:
            cmdline = " ".join(proc.cmdline())
            sockets = proc.net_connections("inet")
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        for conn in sockets:
            if conn.status != psutil.CONN_LISTEN and conn.type == 1:
                continue
            if conn.type == 2 and conn.raddr:  # a connected UDP socket is a client, not a listener
                continue
            ip = conn.laddr.ip.removeprefix("::ffff:")
            if ip in ("127.0.0.1", "::1") or ip.startswith("127."):
                continue
            exposed.append((cmdline[:80], conn.laddr.ip, conn.laddr.port))
    assert not exposed, f"listening beyond loopback: {exposed}"


def _network_address() -> str:
    import psutil

    for addresses in psutil.net_if_addrs().values():
        for address in addresses:
            if address.family.name == "AF_INET" and not address.address.startswith("127."):
                return address.address
    pytest.fail("this machine has no non-loopback IPv4 address to bind to")


def test_a_network_bind_host_serves_dicomweb_and_dimse_there(tmp_path, pki):
    """A hospital binds the archive to the server's own address (auth on): DICOMweb and the SCP answer
    there. Ray's HAProxy ingress cannot (it health-checks replicas on loopback), so Serve's proxy serves."""
    from cluster.certs import issue

    host = _network_address()
    # with the archive's certificate naming its address, as a cluster runs it: node links listen at
    # the embedded servers' ports, and Ray's gRPC is mutual TLS
    cert, key = issue(pki["ca"].parent, "archive-on-the-network", "server", [host, "127.0.0.1"])
    certificates = {"tls_cert_file": str(cert), "tls_key_file": str(key), "tls_ca_file": str(pki["ca"])}
    overrides = stack_overrides(tmp_path / "var", bind_host=host, **stack_auth_settings(), **certificates)
    running = RunningStack(overrides, tmp_path / "up.log")
    running.start()
    try:
        port = running.settings.web.http_port
        answer = requests.get(f"http://{host}:{port}/dicomweb/studies", headers=bearer(TENANT, roles=["reader"]), timeout=30)
        assert answer.status_code in (200, 204), answer.text
        assert requests.get(f"http://{host}:{port}/dicomweb/studies", timeout=30).status_code == 401
        echo = subprocess.run(
            ["echoscu", "-aec", running.settings.dimse.ae_title, host, str(running.settings.dimse.port)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert echo.returncode == 0, echo.stdout + echo.stderr
        banner = running.log.read_text()
        assert re.search(r"Ingress +Serve's own proxy", banner) and re.search(r"HTTPS +OFF on a network address", banner), banner
        _nothing_open_on(running, host)
        _ray_speaks_only_mutual_tls(running, host, banner)
    finally:
        running.stop()


def _ray_speaks_only_mutual_tls(running, host: str, banner: str) -> None:
    """Issue 27 item 8: on a network address, with the archive's certificates, Ray's gRPC between its
    processes and nodes is mutual TLS: its GCS answers neither a plaintext HTTP/2 client nor a TLS
    client without a certificate of our CA, while `dicomflow status` (a Ray driver set up the same
    way) still reaches the cluster."""
    import socket

    assert "Ray's gRPC in mutual TLS" in banner, banner
    gcs_host, _, gcs_port = (running.settings.var_path / "run" / "ray_address").read_text().strip().rpartition(":")
    assert gcs_host == host, "Ray's node address is the network one"
    preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"  # an empty SETTINGS frame
    with socket.create_connection((host, int(gcs_port)), timeout=10) as raw:
        raw.sendall(preface)
        try:
            answer = raw.recv(64)
        except (ConnectionError, TimeoutError):
            answer = b""
    assert not (len(answer) >= 4 and answer[3] == 0x04), f"the GCS spoke plaintext HTTP/2: {answer!r}"
    assert _answer_without_a_certificate(host, int(gcs_port)) == b"", "the GCS took a TLS client without a certificate"
    status = running.cli("status", timeout=180)
    assert re.search(r"cluster: 1 node\(s\)", status.stdout), status.stdout + status.stderr


def _listening_on(running, host: str) -> dict[int, list[str]]:
    """Port -> the command lines of the stack's processes listening on `host` there."""
    import psutil

    found: dict[int, list[str]] = {}
    for proc in [psutil.Process(running.process.pid), *running.descendants()]:
        try:
            listening = [c for c in proc.net_connections("tcp") if c.status == psutil.CONN_LISTEN]
            cmdline = " ".join(proc.cmdline())
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        for conn in listening:
            if conn.laddr.ip.removeprefix("::ffff:") in (host, "0.0.0.0", "::"):
                found.setdefault(conn.laddr.port, []).append(cmdline)
    return found


def _nothing_open_on(running, host: str) -> None:
    """Issue 27's "done when": on a network address, every port asks who is calling. DICOMweb (401
    above), the SCP (C-ECHO only for a stranger) and Ray's own ports (its token) may listen there;
    not Temporal, its UI, PostgreSQL or Redis (reached by other hosts' nodes only through mutual-TLS
    node links, tests/test_node_link.py), nor anything else."""

    s = running.settings
    exposed = _listening_on(running, host)
    assert s.temporal.ui_port not in exposed, f"the Temporal UI listens on {host} (it is reached through /temporal)"
    unknown_ae = _associate_at(host, s.dimse.port, s.dimse.ae_title, "STRANGER", [(CTImageStorage,)])
    assert unknown_ae.is_rejected, "an unknown AE may store on a network address with auth on"
    # the embedded servers themselves stay on loopback; what listens at their ports is the node link
    # (mutual TLS, cluster/node_link.py), which answers nobody without a certificate from our CA
    linked = {s.index.port, s.cache.port, s.temporal.port}
    for port in linked & set(exposed):
        assert all("cluster.node_link" in c for c in exposed[port]), (port, exposed[port])
        assert _answer_without_a_certificate(host, port) == b"", f"the node link on {port} answered a stranger"
    assert (s.index.port in exposed) == (s.tls.ca_file is not None), "node links run exactly when certificates are set"
    ours = {s.web.http_port, s.dimse.port, s.dimse.tls_port} | linked
    for port, commands in exposed.items():
        if port in ours:
            continue
        assert all("ray" in c.lower() or "dicomflow up" in c for c in commands), (port, commands)  # Ray's (up is its driver)
        _ray_port_holds_nothing_open(host, port)
    assert requests.get(f"http://{host}:{s.cluster.ray_dashboard_port}/api/version", timeout=10).status_code == 401


def _ray_port_holds_nothing_open(host: str, port: int) -> None:
    """Ray's gRPC servers want its token (checked by hand: UNAUTHENTICATED for each service's own
    methods). Over HTTP, only the dashboard's page answers without one; Ray's Prometheus exporters,
    which Ray binds to every interface of a network node, are on loopback (rayfence/metrics_binding.py)."""
    try:
        answer = requests.get(f"http://{host}:{port}/", timeout=5)
    except requests.RequestException:
        return  # not HTTP (gRPC, or closed to a plain request)
    if answer.status_code != 200:
        assert answer.status_code in (401, 403, 404), (port, answer.status_code, answer.text[:200])
        return
    assert answer.text.startswith("<!doctype html>"), (port, answer.text[:200])


def _answer_without_a_certificate(host: str, port: int) -> bytes:
    """What a TLS client with no certificate gets back for its first bytes: b'' when refused."""
    import socket
    import ssl

    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    try:
        with socket.create_connection((host, port), timeout=10) as raw, context.wrap_socket(raw) as tls:
            tls.sendall(b"\x00\x00\x00\x08\x04\xd2\x16\x2f")
            return tls.recv(1)
    except (ssl.SSLError, ConnectionError, OSError):
        return b""


def _associate_at(host: str, port: int, called: str, calling: str, contexts: list):
    ae = AE(ae_title=calling)
    ae.acse_timeout = ae.network_timeout = 15
    for context in contexts:
        ae.add_requested_context(*context)
    assoc = ae.associate(host, port, ae_title=called)
    if assoc.is_established:
        assoc.release()
    return assoc


# -- HTTPS -----------------------------------------------------------------------------------------


def test_dicomweb_is_https_with_the_archive_certificate(stack, pki):
    """The session stack runs https = true: a client that trusts the archive's CA and checks the host
    name gets answers; plain HTTP and TLS older than 1.2 get no DICOMweb at all."""
    import socket
    import ssl

    import certifi

    from cluster.serve_ingress import haproxy_dir

    url = stack.url("/dicomweb/studies")
    assert url.startswith("https://")
    answer = requests.get(url, headers=bearer(TENANT, roles=["reader"]), verify=str(pki["ca"]), timeout=30)
    assert answer.status_code in (200, 204), answer.text
    with pytest.raises(requests.exceptions.SSLError):
        requests.get(url, verify=certifi.where(), timeout=30)  # the public CAs do not vouch for it
    with pytest.raises(requests.exceptions.ConnectionError):
        requests.get(url.replace("https://", "http://"), timeout=30)
    old = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    old.load_verify_locations(pki["ca"])
    old.maximum_version = ssl.TLSVersion.TLSv1_1
    with socket.create_connection(("127.0.0.1", stack.settings.web.http_port), timeout=10) as raw:
        with pytest.raises(ssl.SSLError):
            old.wrap_socket(raw, server_hostname="127.0.0.1")
    pem = Path(haproxy_dir(stack.settings)) / "dicomweb.pem"
    assert pem.stat().st_mode & 0o077 == 0, "the key HAProxy reads is private"


# -- DICOM TLS -------------------------------------------------------------------------------------


def _tls_args(pki, with_client_cert: bool = True) -> list[str]:
    if with_client_cert:
        return ["+tls", str(pki["client_key"]), str(pki["client"]), "+cf", str(pki["ca"])]
    return ["+tla", "+cf", str(pki["ca"])]  # TLS, but no certificate of its own


def test_dcmtk_echo_and_store_over_dicom_tls(stack, pki, data_dir):
    s = stack.settings
    echo = subprocess.run(
        ["echoscu", *_tls_args(pki), "-aec", s.dimse.ae_title, "127.0.0.1", str(s.dimse.tls_port)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert echo.returncode == 0, echo.stdout + echo.stderr
    payload, uids = _restamped(data_dir)
    sent = Path(stack.settings.var_path.parent / "tls-object.dcm")
    sent.write_bytes(payload)
    store = subprocess.run(
        [
            "storescu",
            *_tls_args(pki),
            "-aet",
            "MODALITY",
            "-aec",
            s.dimse.ae_title,
            "127.0.0.1",
            str(s.dimse.tls_port),
            str(sent),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert store.returncode == 0, store.stdout + store.stderr
    assert _tenant_of(stack.settings, uids["instance"]) == [("default",)]


def test_dicom_tls_without_a_client_certificate_is_refused(stack, pki):
    s = stack.settings
    echo = subprocess.run(
        ["echoscu", *_tls_args(pki, with_client_cert=False), "-aec", s.dimse.ae_title, "127.0.0.1", str(s.dimse.tls_port)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert echo.returncode != 0
    plain = subprocess.run(
        ["echoscu", "-to", "10", "-aec", s.dimse.ae_title, "127.0.0.1", str(s.dimse.tls_port)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert plain.returncode != 0  # plain DICOM on the TLS port gets nowhere


def test_embedded_postgres_and_redis_need_passwords_kept_private(stack):
    """Generated at first start into var/secrets (0700/0600); no other local user can read them, and
    neither server answers without them."""
    import stat

    import psycopg
    import redis

    s = stack.settings
    folder = s.var_path / "secrets"
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    files = list(folder.iterdir())
    assert files and all(stat.S_IMODE(f.stat().st_mode) == 0o600 for f in files)
    with pytest.raises(psycopg.OperationalError, match="password"):
        psycopg.connect(f"postgresql://dicomflow@{s.bind_host}:{s.index.port}/dicomflow", connect_timeout=5)
    with pytest.raises(redis.exceptions.RedisError, match="(?i)auth"):
        redis.Redis(host=s.bind_host, port=s.cache.port, socket_timeout=5).ping()
    secrets = [f.read_text().strip() for f in files if f.name.endswith("_password")]
    for process in stack.descendants():
        try:
            command = " ".join(process.cmdline())
        except Exception:  # noqa: BLE001 - a process that ended meanwhile
            continue
        assert not any(secret in command for secret in secrets), f"a password on the command line of {process.name()}"
    assert not any(secret in stack.log.read_text() for secret in secrets), "a password in the banner or the log of `up`"
