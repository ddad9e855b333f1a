"""One error shape for every 4xx/5xx body: `{"error": "<what went wrong and what to do>"}`, and one
shape for the HTTP Warning header DICOMweb answers carry (PS3.18 8.4, RFC 7234 5.5)."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

WARN_TEXT_MAX = 500  # a header, not a report: the body or the log has the rest
_AGENT = re.compile(r"[A-Za-z0-9.\-\[\]:]+")


def warning(base_url: str, *texts: str) -> str:
    """`299 <host[:port]> "<text>"` per text, comma-joined. PS3.18 names the service by its base URI;
    RFC 7234 admits only its authority as warn-agent, and warn-text must be a quoted-string, so
    quotes and backslashes are escaped and what a header cannot carry (controls, non-ASCII, often
    echoed from a query string) becomes '?'."""
    agent = urlsplit(base_url).netloc
    agent = agent if _AGENT.fullmatch(agent) else "dicomflow"
    return ", ".join(f'299 {agent} "{_quoted(text)}"' for text in texts)


def _quoted(text: str) -> str:
    if len(text) > WARN_TEXT_MAX:
        text = text[: WARN_TEXT_MAX - 3] + "..."
    printable = "".join(c if " " <= c <= "~" else "?" for c in text)
    return printable.replace("\\", "\\\\").replace('"', '\\"')


def problem(status: int, reason: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": reason}, status_code=status, headers=headers)


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    return problem(exc.status_code, str(exc.detail), getattr(exc, "headers", None))


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    reasons = []
    for error in exc.errors():
        where = ".".join(str(p) for p in error.get("loc", ()) if p not in ("query", "path", "header"))
        reasons.append(f"{where}: {error.get('msg')}")
    return problem(400, "; ".join(reasons) or "malformed request")


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
