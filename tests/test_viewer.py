"""The OHIF viewer at /viewer, in a real browser (Debian's chromium, driven by Playwright) on the
session stack, auth on: sign in with a reader's bearer token for one tenant, the study list shows
that tenant's studies, and a CT and an MR study open from deep links with their pixels drawn.
Every DICOMweb request the viewer makes must carry the token and stay on the archive's origin."""

from __future__ import annotations

import base64
import io
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
import pytest
from dicomweb_client.api import DICOMwebClient
from PIL import Image
from playwright import sync_api as playwright_api  # a dev extra: `make test` installs it
from pydicom import dcmread
from temporalio.client import WorkflowExecutionStatus

from serve.viewer import STORAGE_KEY, VIEWER_DIST
from testkit.temporal_waits import wait_completed
from tests.auth import AUDIENCE, bearer, issuer, token
from tests.conftest import run

TENANT = "viewer"
CHROMIUM = "/usr/bin/chromium"
SCREENSHOTS = Path("/tmp")
CT_FILE = ("pydicom-data", "data_store", "data", "693_J2KR.dcm")  # a real 512x512 head CT, JPEG 2000 lossless
MR_FOLDER = ("dcm_qa_nih",)  # a real Siemens MR study: 4 EPI series, 216x216
LOAD_TIMEOUT_MS = 120_000  # OHIF's first load on a busy 2-core machine
MIN_STDDEV = 10.0  # grey levels: a blank or uniform viewport is ~0


@pytest.fixture(scope="module")
def studies(stack, data_dir) -> dict[str, dict[str, str]]:
    """A CT and an MR study stored in TENANT by a writer; modality -> its UID and the name the list shows."""
    ct = [data_dir.joinpath(*CT_FILE)]
    mr = sorted(data_dir.joinpath(*MR_FOLDER).rglob("*.dcm"))
    client = DICOMwebClient(url=stack.url("/dicomweb"), headers=bearer(TENANT, ["writer"]))
    found = {}
    for modality, paths in (("CT", ct), ("MR", mr)):
        datasets = [dcmread(p) for p in paths]
        client.store_instances(datasets=datasets)
        found[modality] = {"study": str(datasets[0].StudyInstanceUID), "name": _display_name(str(datasets[0].PatientName))}
    ids = [f"study:{TENANT}:{s['study']}" for s in found.values()]
    assert set(run(wait_completed(stack.settings, ids, timeout=180)).values()) == {WorkflowExecutionStatus.COMPLETED}
    return found


@pytest.fixture(scope="module")
def browser() -> Iterator[playwright_api.Browser]:
    """Debian's chromium, never a downloaded one: the Makefile's system-test-deps installs it."""
    chromium = shutil.which("chromium") or CHROMIUM
    assert Path(chromium).exists(), f"no chromium at {CHROMIUM}: run `make system-test-deps` (it installs Debian's chromium)"
    assert (VIEWER_DIST / "index.html").is_file(), f"the viewer is not installed in {VIEWER_DIST}: run `make viewer`"
    with playwright_api.sync_playwright() as p:
        # WebGL in a headless browser without a GPU: SwiftShader, which Chromium no longer picks by itself
        launched = p.chromium.launch(
            executable_path=chromium,
            headless=True,
            args=["--enable-unsafe-swiftshader", "--use-angle=swiftshader", "--no-sandbox"],
        )
        yield launched
        launched.close()


class Traffic:
    """What the page asked the archive for, and what went wrong, for assertions after the fact."""

    def __init__(self, origin: str) -> None:
        self.origin = origin
        self.dicomweb: list[tuple[str, str | None]] = []  # (path, Authorization header)
        self.foreign: list[str] = []
        self.failed: list[str] = []

    def on_request(self, request: playwright_api.Request) -> None:
        parts = urlsplit(request.url)
        if parts.scheme in ("data", "blob"):
            return
        if f"{parts.scheme}://{parts.netloc}" != self.origin:
            self.foreign.append(request.url)
        elif "/dicomweb" in parts.path:
            self.dicomweb.append((parts.path, request.headers.get("authorization")))

    def on_response(self, response: playwright_api.Response) -> None:
        if response.status >= 400:
            self.failed.append(f"{response.status} {response.url}")


@pytest.fixture(scope="module")
def page(stack, studies, browser) -> Iterator[tuple[playwright_api.Page, Traffic]]:
    """Signed in through the viewer's login page with a reader's token for TENANT. `studies` before
    `browser`: Playwright's sync API runs an event loop, after which asyncio.run (the waits) would fail."""
    # the stack's certificate comes from the test CA, which this browser profile does not know
    context = browser.new_context(ignore_https_errors=True, viewport={"width": 1400, "height": 900})
    traffic = Traffic(stack.url(""))
    new_page = context.new_page()
    new_page.on("request", traffic.on_request)
    new_page.on("response", traffic.on_response)
    new_page.goto(stack.url("/viewer/"))
    new_page.wait_for_url("**/viewer/login.html?next=*")  # no token yet: the viewer sends us to sign in
    new_page.fill("#token", token([TENANT], ["reader"], subject="radiologist"))
    new_page.fill("#tenant", TENANT)
    new_page.click("button[type=submit]")
    new_page.wait_for_url(stack.url("/viewer/"))
    yield new_page, traffic
    context.close()


def _dismiss_overlays(page: playwright_api.Page) -> None:
    """OHIF's once-per-browser notices (investigational use, the viewer tour) cover the image in screenshots."""
    for control in (page.get_by_text("Skip all"), page.get_by_role("button", name="Confirm and hide")):
        try:
            if control.count():
                control.first.click(timeout=5_000)
        except playwright_api.Error:
            pass  # gone by itself meanwhile: only the screenshot would suffer


def _display_name(patient_name: str) -> str:
    """How OHIF's study list shows a DICOM person name: 'Family, Given'."""
    family, _, rest = patient_name.partition("^")
    given = rest.split("^")[0]
    return f"{family}, {given}" if given else family


def test_study_list_shows_the_tenants_studies(page, studies):
    viewer, traffic = page
    for study in studies.values():
        viewer.get_by_text(study["name"], exact=True).first.wait_for(timeout=LOAD_TIMEOUT_MS)
    viewer.get_by_text(f"1-{len(studies)} of {len(studies)}").wait_for()  # the tenant's studies, no one else's
    _dismiss_overlays(viewer)
    viewer.screenshot(path=str(SCREENSHOTS / "viewer-study-list.png"))
    assert traffic.dicomweb, "the study list made no DICOMweb request"


@pytest.mark.parametrize("modality", ["CT", "MR"])
def test_a_study_opens_with_its_image_drawn(stack, page, studies, modality):
    viewer, traffic = page
    viewer.goto(stack.url(f"/viewer/viewer?StudyInstanceUIDs={studies[modality]['study']}"))  # a deep link
    canvas = viewer.locator("canvas.cornerstone-canvas").first
    canvas.wait_for(timeout=LOAD_TIMEOUT_MS)
    spread = _wait_for_pixels(canvas)
    _dismiss_overlays(viewer)
    viewer.screenshot(path=str(SCREENSHOTS / f"viewer-{modality.lower()}.png"))
    assert spread > MIN_STDDEV, (
        f"the {modality} viewport stayed blank (grey-level spread {spread:.1f}); failed: {traffic.failed[:10]}"
    )


def test_every_dicomweb_request_carried_the_token_on_the_tenant_root(stack, page, studies):
    viewer, traffic = page
    viewer.goto(stack.url("/viewer/"))  # the study list once more, so this test holds on its own too
    viewer.get_by_text(studies["CT"]["name"], exact=True).first.wait_for(timeout=LOAD_TIMEOUT_MS)
    unauthenticated = [path for path, auth in traffic.dicomweb if not (auth or "").startswith("Bearer ")]
    assert not unauthenticated, f"requests without the bearer token: {unauthenticated[:5]}"
    elsewhere = [path for path, _ in traffic.dicomweb if not path.startswith(f"/tenants/{TENANT}/dicomweb/")]
    assert not elsewhere, f"requests outside the chosen tenant's root: {elsewhere[:5]}"
    assert not traffic.failed, f"failed requests (a file the relocation missed, a refused call): {traffic.failed[:10]}"
    assert not traffic.foreign, f"the viewer reached outside the archive: {traffic.foreign[:5]}"


def test_a_refused_token_leads_back_to_sign_in(stack, browser):
    context = browser.new_context(ignore_https_errors=True)
    login = context.new_page()
    login.goto(stack.url("/viewer/login.html"))
    login.fill("#token", "not-a-token")
    login.click("button[type=submit]")
    login.get_by_text("401").wait_for()  # tried before it is kept: the user sees why at once
    assert "/viewer/login.html" in login.url
    # a token that expires while the viewer is open: the archive's first 401 sends the user to sign in again
    expired = issuer().token("radiologist", tenants=(TENANT,), roles=("reader",), audience=AUDIENCE, expires_in=-3600)
    login.evaluate("([key, value]) => sessionStorage.setItem(key, value)", [f"{STORAGE_KEY}.token", expired])
    login.goto(stack.url("/viewer/"))
    login.wait_for_url("**/viewer/login.html?next=*", timeout=LOAD_TIMEOUT_MS)
    context.close()


def _wait_for_pixels(canvas: playwright_api.Locator, timeout: float = LOAD_TIMEOUT_MS / 1000) -> float:
    """The grey-level spread of what the viewport's canvas holds (the image only: OHIF's text and
    annotations are other elements), once it is not blank or at the timeout."""
    deadline, spread = time.monotonic() + timeout, 0.0
    while time.monotonic() < deadline:
        data_url = canvas.evaluate("c => c.toDataURL('image/png')")
        png = base64.b64decode(data_url.partition(",")[2])
        spread = float(np.asarray(Image.open(io.BytesIO(png)).convert("L"), dtype=np.float32).std())
        if spread > MIN_STDDEV:
            break
        time.sleep(1.0)
    return spread
