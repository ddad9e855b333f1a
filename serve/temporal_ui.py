"""The Temporal Web UI, through dicomflow's own origin and identity.

The embedded Temporal dev server has no authentication of its own: whoever reaches its UI can read
every workflow's history (patient UIDs) and terminate or reset any of them. So it listens on
loopback only, under the public path `/temporal`, and this route is the one way in: the caller
needs the `operator` role (the UI shows every tenant's workflows). A browser cannot add a bearer
header, so `/temporal-login` turns a pasted token into an HttpOnly, SameSite=Strict cookie that
this route accepts in its place; it carries the same token and is checked the same way.

The proxy reaches the UI on this node's loopback, so it answers on the replicas of the node that
runs the embedded Temporal (the head); an external Temporal has its own UI and its own identity.
"""

from __future__ import annotations

import html
import time
from typing import Annotated

import httpx
import jwt
from fastapi import APIRouter, Form, HTTPException, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse

from archive.audit import AuditAction
from archive.config.settings import TEMPORAL_UI_PATH
from archive.identity import Principal, Role
from archive.identity.tokens import InvalidToken
from serve.deps import audit_note, authenticate, get_settings, get_verifier

PUBLIC_PATH = TEMPORAL_UI_PATH
LOGIN_PATH = "/temporal-login"
COOKIE = "dicomflow_operator"
MAX_BODY_BYTES = 1 << 20  # the UI posts small JSON (a terminate reason, a signal's input)
UPSTREAM_TIMEOUT_SECONDS = 30.0
# hop-by-hop headers, and our credentials, never travel to the UI
_NOT_FORWARDED = {
    "host",
    "authorization",
    "connection",
    "keep-alive",
    "transfer-encoding",
    "te",
    "upgrade",
    "proxy-authorization",
    "content-length",
    "accept-encoding",
}
_NOT_RETURNED = {"connection", "keep-alive", "transfer-encoding", "content-encoding", "content-length"}

router = APIRouter(tags=["Operations"], include_in_schema=False)


async def _operator(request: Request) -> Principal:
    """The caller from its bearer header, or from the login cookie; it must hold the operator role."""
    cookie = request.cookies.get(COOKIE)
    if cookie and "authorization" not in request.headers and get_settings(request).auth != "none":
        try:
            caller = await (await get_verifier(request)).verify(cookie)
        except InvalidToken as err:
            raise HTTPException(401, f"the login cookie holds no valid token ({err}): log in again at {LOGIN_PATH}") from None
        audit_note(request)["principal"] = caller
    else:
        caller = await authenticate(request)
    if not caller.has(Role.OPERATOR):
        raise HTTPException(
            403,
            f"the Temporal Web UI shows every tenant's workflows and needs the 'operator' role, "
            f"which {caller.subject} does not have",
        )
    return caller


def _upstream(request: Request) -> str:
    settings = get_settings(request)
    if settings.temporal.address:
        raise HTTPException(404, "Temporal is external (temporal_address is set): use that cluster's own Web UI")
    return settings.embedded_temporal_ui_url.removesuffix(TEMPORAL_UI_PATH + "/")


async def _bounded_body(request: Request) -> bytes:
    """The request body, refused (413) as soon as it passes MAX_BODY_BYTES, before it is all read."""
    too_large = HTTPException(413, f"a Temporal UI request body is at most {MAX_BODY_BYTES} bytes")
    if int(request.headers.get("content-length") or 0) > MAX_BODY_BYTES:
        raise too_large
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY_BYTES:
            raise too_large
    return bytes(body)


async def _forward(request: Request, url: str) -> Response:
    body = await _bounded_body(request)
    headers = {k: v for k, v in request.headers.items() if k.lower() not in _NOT_FORWARDED}
    try:
        async with httpx.AsyncClient(timeout=UPSTREAM_TIMEOUT_SECONDS) as client:
            answer = await client.request(request.method, url, params=request.query_params, content=body, headers=headers)
    except httpx.HTTPError as err:
        raise HTTPException(
            502,
            f"the Temporal Web UI on this node's loopback did not answer ({type(err).__name__}); "
            "it runs on the head node: check `dicomflow status`",
        ) from None
    kept = [(k, v) for k, v in answer.headers.multi_items() if k.lower() not in _NOT_RETURNED]
    response = Response(answer.content, status_code=answer.status_code)
    response.raw_headers = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in kept]
    response.headers["content-length"] = str(len(answer.content))
    return response


@router.api_route(PUBLIC_PATH, methods=["GET", "POST", "PUT", "PATCH", "DELETE"])
@router.api_route(PUBLIC_PATH + "/{path:path}", methods=["GET", "POST", "PUT", "PATCH", "DELETE"])
async def temporal_ui(request: Request, path: str = "") -> Response:
    await _operator(request)
    return await _forward(request, f"{_upstream(request)}{PUBLIC_PATH}/{path}")


_LOGIN_PAGE = """<!doctype html><html lang="en"><head><meta charset="utf-8"><title>dicomflow: Temporal Web UI login</title></head>
<body><h1>Temporal Web UI</h1><p>Paste an access token with the <code>operator</code> role.</p>{error}
<form method="post" action="{action}"><textarea name="token" rows="6" cols="80" required></textarea><br>
<button type="submit">Open the Temporal Web UI</button></form></body></html>"""


def _expiry(token: str) -> float:
    """The verified token's `exp`: the cookie lives no longer than the token in it."""
    return float(jwt.decode(token.strip(), options={"verify_signature": False})["exp"])


@router.get(LOGIN_PATH)
async def login_page() -> HTMLResponse:
    return HTMLResponse(_LOGIN_PAGE.format(error="", action=LOGIN_PATH))


@router.post(LOGIN_PATH)
async def login(request: Request, token: Annotated[str, Form(max_length=16384)]) -> Response:
    audit_note(request)["action"] = AuditAction.LOGIN
    try:
        caller = await (await get_verifier(request)).verify(token.strip())
    except InvalidToken as err:
        page = _LOGIN_PAGE.format(error=f"<p role='alert'>{html.escape(str(err))}</p>", action=LOGIN_PATH)
        return HTMLResponse(page, status_code=401)
    audit_note(request)["principal"] = caller
    if not caller.has(Role.OPERATOR):
        raise HTTPException(403, f"{caller.subject} does not have the 'operator' role the Temporal Web UI needs")
    response = RedirectResponse(PUBLIC_PATH + "/", status_code=303)
    lifetime = max(1, int(_expiry(token) - time.time()))
    response.set_cookie(
        COOKIE,
        token.strip(),
        max_age=lifetime,
        path=PUBLIC_PATH,
        httponly=True,
        secure=get_settings(request).web.https,
        samesite="strict",
    )
    return response
