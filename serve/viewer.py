"""The OHIF viewer at /viewer, served from the same origin as DICOMweb (so the browser needs no CORS).

`dicomflow viewer install` (or `make viewer`) puts OHIF's prebuilt app, relocated to /viewer/, in
the checkout's `.viewer/dist`; this module serves those files, an `app-config.js` generated for this
archive, and a small sign-in page. Paths that are not files are OHIF's own routes (the study list,
/viewer/viewer?StudyInstanceUIDs=...), so they get index.html.

Auth, and why it is done this way:
- The viewer's files are public: they are the same for everyone and hold no patient data.
- Every DICOMweb request the viewer makes carries `Authorization: Bearer <token>`, checked as any
  other client's. The user gives the token (and, optionally, the tenant) on /viewer/login.html; the
  page tries it with one QIDO call and keeps it in the tab's sessionStorage, where OHIF's own OIDC
  sign-in keeps its tokens too: gone when the tab closes, not shared with other tabs.
- Never in a URL (OHIF's `?token=`): URLs end up in access logs, browser history and bookmarks.
  Never in a cookie: the browser would attach it to any request to this origin, a forged form post
  included (CSRF on STOW and DELETE); a header is only sent by our code.
- The generated app-config.js registers a small OHIF extension that answers OHIF's
  userAuthenticationService, which every DICOMweb call of OHIF (QIDO, metadata, frames, thumbnails)
  asks for its Authorization header. A 401 (an expired token) sends the user back to sign in.
- With a hospital IdP the better sign-in is OHIF's own OIDC (authorization code + PKCE); it needs the
  viewer registered at the IdP as a public client, hence a client id setting, which is not there yet.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from starlette.exceptions import HTTPException
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

from archive.config.settings import Settings

VIEWER_PATH = "/viewer"
# code, not data: one copy per checkout, whatever var_dir a stack runs with (test stacks use temporary ones)
VIEWER_HOME = Path(__file__).resolve().parents[1] / ".viewer"
VIEWER_DIST = VIEWER_HOME / "dist"
LOGIN_PAGE = "login.html"
STORAGE_KEY = "dicomflow.viewer"  # sessionStorage: .token and .tenant
_HASHED = re.compile(r"\.[0-9a-f]{16,}\.|^[0-9a-f]{16,}\.")  # content-hashed names never change: cache them for good
_PAGE_HEADERS = {
    "Cache-Control": "no-cache",
    "X-Frame-Options": "SAMEORIGIN",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
}

router = APIRouter(include_in_schema=False)


def install_viewer(app: FastAPI) -> None:
    """Adds /viewer to the app: the generated pages first, then the installed files."""
    app.include_router(router)
    app.mount(VIEWER_PATH, ViewerFiles(directory=VIEWER_DIST, check_dir=False), name="viewer")


@router.get(VIEWER_PATH)
async def viewer_root() -> RedirectResponse:
    """Relative, so it holds behind a proxy that terminates TLS (an absolute URL would say http)."""
    return RedirectResponse(VIEWER_PATH + "/", status_code=307)


@router.get(f"{VIEWER_PATH}/app-config.js")
async def app_config(request: Request) -> Response:
    settings: Settings = request.app.state.settings
    return Response(app_config_js(settings), media_type="text/javascript", headers=_PAGE_HEADERS)


@router.get(f"{VIEWER_PATH}/{LOGIN_PAGE}")
async def login_page(request: Request) -> HTMLResponse:
    settings: Settings = request.app.state.settings
    return HTMLResponse(_page(_LOGIN_HTML, settings), headers=_PAGE_HEADERS)


def _constants(settings: Settings) -> str:
    """What the browser-side code needs to know about this archive, as a JavaScript object literal."""
    return json.dumps(
        {"base": VIEWER_PATH, "login": f"{VIEWER_PATH}/{LOGIN_PAGE}", "key": STORAGE_KEY, "authRequired": settings.auth != "none"}
    )


def _page(template: str, settings: Settings) -> str:
    return template.replace("__DICOMFLOW__", _constants(settings))


def app_config_js(settings: Settings) -> str:
    """OHIF's configuration for this archive: one DICOMweb data source on this origin, `/dicomweb`,
    or `/tenants/{tenant}/dicomweb` once a tenant was chosen at sign-in."""
    return _page(_APP_CONFIG_JS, settings)


class ViewerFiles(StaticFiles):
    """The installed dist/. A path that names no file and has no extension is an OHIF route: index.html.
    A missing script or image stays a 404 (index.html in its place would fail in confusing ways)."""

    async def check_config(self) -> None:
        """Installed after start-up is fine: each request looks for the files."""

    async def get_response(self, path: str, scope: Scope) -> Response:
        if not (VIEWER_DIST / "index.html").is_file():
            return HTMLResponse(_NOT_INSTALLED, status_code=503, headers=_PAGE_HEADERS)
        try:
            return await super().get_response(path, scope)
        except HTTPException as err:
            if err.status_code != 404 or os.path.splitext(os.path.basename(path))[1]:
                raise
        return await super().get_response("index.html", scope)

    def file_response(
        self, full_path: str | os.PathLike[str], stat_result: os.stat_result, scope: Scope, status_code: int = 200
    ) -> Response:
        response = super().file_response(full_path, stat_result, scope, status_code)
        hashed = _HASHED.search(os.path.basename(full_path))
        response.headers.update({"Cache-Control": "public, max-age=31536000, immutable"} if hashed else _PAGE_HEADERS)
        return response


_NOT_INSTALLED = """<!doctype html><title>Viewer not installed</title>
<p>The OHIF viewer is not installed on this server. Run <code>make viewer</code>
(or <code>dicomflow viewer install</code>) in the dicomflow checkout; no restart is needed.</p>"""

# OHIF reads window.config before it starts. Kept in one piece so it reads as the JavaScript it is.
_APP_CONFIG_JS = """/* OHIF configuration generated by dicomflow (serve/viewer.py) for this archive. */
(function () {
  const DICOMFLOW = __DICOMFLOW__;
  const token = sessionStorage.getItem(DICOMFLOW.key + '.token');
  const tenant = sessionStorage.getItem(DICOMFLOW.key + '.tenant');
  const toLogin = function () {
    const next = location.pathname + location.search;
    location.assign(DICOMFLOW.login + '?next=' + encodeURIComponent(next));
  };
  if (DICOMFLOW.authRequired && !token) {
    toLogin();
  }
  const root = location.origin + (tenant ? '/tenants/' + encodeURIComponent(tenant) : '') + '/dicomweb';
  // OHIF asks its userAuthenticationService for the Authorization header of every DICOMweb request
  const dicomflowAuth = {
    id: 'dicomflow-auth',
    preRegistration: function (options) {
      options.servicesManager.services.userAuthenticationService.setServiceImplementation({
        getAuthorizationHeader: function () { return token ? { Authorization: 'Bearer ' + token } : {}; },
        handleUnauthenticated: toLogin,
      });
    },
  };
  window.config = {
    routerBasename: DICOMFLOW.base,
    extensions: [dicomflowAuth],
    modes: [],
    showStudyList: true,
    showWarningMessageForCrossOrigin: false,
    showCPUFallbackMessage: true,
    showLoadingIndicator: true,
    strictZSpacingForVolumeViewport: true,
    maxNumberOfWebWorkers: 3,
    defaultDataSourceName: 'dicomflow',
    dataSources: [{
      namespace: '@ohif/extension-default.dataSourcesModule.dicomweb',
      sourceName: 'dicomflow',
      configuration: {
        friendlyName: 'dicomflow' + (tenant ? ' (' + tenant + ')' : ''),
        name: 'dicomflow',
        qidoRoot: root,
        wadoRoot: root,
        wadoUriRoot: root + '/wado',
        qidoSupportsIncludeField: true,
        supportsFuzzyMatching: true,
        supportsWildcard: true,
        supportsReject: false,
        imageRendering: 'wadors',
        thumbnailRendering: 'thumbnail',
        thumbnailRequestStrategy: 'fetch',
        enableStudyLazyLoad: true,
        staticWado: false,
        singlepart: 'bulkdata,video,pdf',
        bulkDataURI: { enabled: true, relativeResolution: 'studies' },
        omitQuotationForMultipartRequest: true,
        dicomUploadEnabled: false,
      },
    }],
    httpErrorHandler: function (error) {
      if (error && error.status === 401) {
        sessionStorage.removeItem(DICOMFLOW.key + '.token');
        toLogin();
      }
    },
  };
})();
"""

_LOGIN_HTML = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>dicomflow viewer: sign in</title>
<meta name="viewport" content="width=device-width,initial-scale=1">
<link rel="icon" href="/viewer/assets/favicon.ico">
<style>
 body { font: 15px/1.4 system-ui, sans-serif; background: #090c29; color: #e0e6f0; display: grid; place-items: center; min-height: 90vh; }
 form { background: #151a3a; padding: 24px 28px; border-radius: 8px; width: min(560px, 90vw); }
 label { display: block; margin: 14px 0 4px; } textarea, input { width: 100%; box-sizing: border-box; font: 13px monospace; }
 button { margin-top: 16px; padding: 6px 18px; } #error { color: #ff8a8a; min-height: 1.4em; } small { color: #9aa4c0; }
</style></head>
<body><form id="login" autocomplete="off">
 <h2>dicomflow viewer</h2>
 <label for="token">Bearer token <small id="token-note"></small></label>
 <textarea id="token" rows="5" spellcheck="false"></textarea>
 <label for="tenant">Tenant <small>(empty: the one your token allows)</small></label>
 <input id="tenant" spellcheck="false">
 <button type="submit">Open the viewer</button>
 <p id="error" role="alert"></p>
 <small>The token stays in this browser tab only (session storage) and goes to this archive only, as a header.</small>
</form>
<script>
(function () {
  const DICOMFLOW = __DICOMFLOW__;
  const store = sessionStorage;
  store.removeItem(DICOMFLOW.key + '.token');  // coming here is signing out
  document.getElementById('token-note').textContent = DICOMFLOW.authRequired ? '(required)' : '(not needed: auth is off)';
  document.getElementById('tenant').value = store.getItem(DICOMFLOW.key + '.tenant') || '';
  const asked = new URLSearchParams(location.search).get('next') || '';
  // only a page of the viewer: anything else would make this page an open redirect
  const next = asked.startsWith(DICOMFLOW.base + '/') && !asked.startsWith('//') ? asked : DICOMFLOW.base + '/';
  document.getElementById('login').addEventListener('submit', async function (event) {
    event.preventDefault();
    const token = document.getElementById('token').value.trim().replace(/^Bearer\\s+/i, '');
    const tenant = document.getElementById('tenant').value.trim();
    const root = (tenant ? '/tenants/' + encodeURIComponent(tenant) : '') + '/dicomweb';
    const error = document.getElementById('error');
    error.textContent = '';
    const headers = token ? { Authorization: 'Bearer ' + token } : {};
    let response;
    try {
      response = await fetch(root + '/studies?limit=1', { headers: headers, cache: 'no-store' });
    } catch (err) {
      error.textContent = 'The archive did not answer: ' + err;
      return;
    }
    if (!response.ok) {
      const reason = await response.text();
      error.textContent = response.status + ': ' + (reason.slice(0, 300) || response.statusText);
      return;
    }
    if (token) { store.setItem(DICOMFLOW.key + '.token', token); }
    if (tenant) { store.setItem(DICOMFLOW.key + '.tenant', tenant); } else { store.removeItem(DICOMFLOW.key + '.tenant'); }
    location.replace(next);
  });
})();
</script></body></html>
"""
