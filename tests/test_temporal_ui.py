"""The Temporal Web UI behind the archive's identity (issue 27 item 1), in a real browser: the
embedded Temporal listens on loopback only; through DICOMweb's origin an operator logs in with a
token and sees the study workflows, while an anonymous caller, a reader and a tenant's admin do not."""

from __future__ import annotations

import shutil
from pathlib import Path

import psutil
import pytest
import requests
from dicomweb_client.api import DICOMwebClient
from playwright import sync_api as playwright_api
from pydicom import dcmread
from temporalio.client import WorkflowExecutionStatus

from testkit.temporal_waits import wait_completed
from tests.auth import admin_headers, bearer, operator_headers, token
from tests.conftest import run

TENANT = "temporalui"
CHROMIUM = "/usr/bin/chromium"
WORKFLOWS = "/temporal/namespaces/default/workflows"


@pytest.fixture(scope="module")
def study(stack, data_dir) -> str:
    ds = dcmread(data_dir / "pydicom-data" / "data_store" / "data" / "693_J2KR.dcm")
    DICOMwebClient(url=stack.url("/dicomweb"), headers=bearer(TENANT, ["writer"])).store_instances(datasets=[ds])
    workflow = f"study:{TENANT}:{ds.StudyInstanceUID}"
    assert run(wait_completed(stack.settings, [workflow], timeout=180)) == {workflow: WorkflowExecutionStatus.COMPLETED}
    return workflow


def _listen_addresses(port: int) -> set[str]:
    return {c.laddr.ip for c in psutil.net_connections(kind="tcp") if c.status == psutil.CONN_LISTEN and c.laddr.port == port}


def test_embedded_temporal_listens_on_loopback_only(stack):
    """Before the fix both listened on bind_host; with a network bind_host that was an open door."""
    for port in (stack.settings.temporal.port, stack.settings.temporal.ui_port):
        assert _listen_addresses(port) == {"127.0.0.1"}, port


def test_only_an_operator_passes_the_proxy(stack, study):
    api = stack.url("/temporal/api/v1/namespaces/default/workflows")
    assert requests.get(api, timeout=30).status_code == 401
    assert requests.get(api, headers=bearer(TENANT, ["reader"]), timeout=30).status_code == 403
    refused = requests.get(api, headers=admin_headers([TENANT]), timeout=30)
    assert refused.status_code == 403 and "operator" in refused.json()["error"]
    answer = requests.get(api, headers=operator_headers(), timeout=30)
    assert answer.status_code == 200, answer.text
    assert study in {e["execution"]["workflowId"] for e in answer.json()["executions"]}
    assert requests.get(stack.url("/temporal/"), cookies={"dicomflow_operator": "not-a-token"}, timeout=30).status_code == 401


def test_an_oversized_body_is_refused_before_it_is_read_whole(stack):
    """The proxy reads at most 1 MiB of a request body (the UI posts small JSON), announced or not."""
    url = stack.url("/temporal/api/v1/namespaces/default/workflows/x/terminate")
    announced = requests.post(url, data=b"x" * (2 << 20), headers=operator_headers(), timeout=60)
    assert announced.status_code == 413 and "at most" in announced.json()["error"]
    streamed = requests.post(url, data=iter([b"x" * 65536] * 40), headers=operator_headers(), timeout=60)  # chunked, no length
    assert streamed.status_code == 413


@pytest.fixture(scope="module")
def browser():
    chromium = shutil.which("chromium") or CHROMIUM
    assert Path(chromium).exists(), f"no chromium at {CHROMIUM}: run `make system-test-deps`"
    with playwright_api.sync_playwright() as p:
        launched = p.chromium.launch(executable_path=chromium, headless=True, args=["--no-sandbox"])
        yield launched
        launched.close()


def _log_in(browser, stack, bearer_token: str):
    context = browser.new_context(ignore_https_errors=True)
    page = context.new_page()
    page.goto(stack.url("/temporal-login"))
    page.fill("textarea[name=token]", bearer_token)
    page.click("button[type=submit]")
    return context, page


def test_an_operator_sees_the_study_list_in_a_browser(stack, study, browser):
    context, page = _log_in(browser, stack, token([], ["operator"], subject="operator"))
    try:
        page.goto(stack.url(WORKFLOWS))
        page.get_by_text(study).first.wait_for(timeout=90_000)
        page.screenshot(path="/tmp/temporal-ui-operator.png")
        cookie = next(c for c in context.cookies() if c["name"] == "dicomflow_operator")
        assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and cookie["path"] == "/temporal"
    finally:
        context.close()


def test_a_reader_cannot_log_in_and_sees_no_workflows(stack, study, browser):
    context, page = _log_in(browser, stack, token([TENANT], ["reader", "admin"], subject="tenant-admin"))
    try:
        assert "operator" in page.content()
        response = page.goto(stack.url(WORKFLOWS))
        assert response is not None and response.status == 401
        assert study not in page.content()
    finally:
        context.close()
