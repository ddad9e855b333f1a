"""Every DICOMweb request that reached identity checks leaves one audit event, written after the
response is sent (a queue push: the response never waits for the database)."""

from __future__ import annotations

from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from archive.audit import AuditAction, AuditEvent, Outcome
from archive.identity import Principal
from serve.deps import AUDIT_SCOPE_KEY

_UID_PARAMS = {
    "study": "study_uid",
    "series": "series_uid",
    "instance": "sop_uid",
    "studyUID": "study_uid",
    "seriesUID": "series_uid",
    "objectUID": "sop_uid",
}


def _outcome(status: int) -> Outcome:
    if status < 400:
        return Outcome.SUCCESS
    return Outcome.MINOR_FAILURE if status < 500 else Outcome.SERIOUS_FAILURE


def _action(note: dict[str, Any], status: int) -> AuditAction | None:
    if status == 401:
        return AuditAction.LOGIN
    if status == 403:
        return AuditAction.SECURITY_ALERT
    return note.get("action")


def _uids(scope: Scope) -> dict[str, str]:
    found = {}
    params = dict(scope.get("path_params") or {})
    query = scope.get("query_string", b"").decode("latin-1")
    for pair in query.split("&"):
        key, _, value = pair.partition("=")
        if key in ("studyUID", "seriesUID", "objectUID"):
            params[key] = value
    for name, column in _UID_PARAMS.items():
        if isinstance(params.get(name), str):
            found[column] = params[name][:64]
    return found


class AuditMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500

        async def watch(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, watch)
        finally:
            self._record(scope, status)

    def _record(self, scope: Scope, status: int) -> None:
        note: dict[str, Any] = scope.get(AUDIT_SCOPE_KEY) or {}
        action = _action(note, status)
        resources = getattr(scope["app"].state, "resources", None) if "app" in scope else None
        if action is None or resources is None:
            return  # not a patient-data route (health, docs), or nothing opened yet
        principal: Principal | None = note.get("principal")
        client = scope.get("client")
        detail: dict[str, Any] = {"method": scope["method"], "path": scope["path"][:512], "status": status}
        for key in ("query", "detail"):
            if key in note:
                detail[key] = note[key]
        uids = _uids(scope)
        record = resources.audit.record_unauthenticated if status == 401 else resources.audit.record
        record(
            AuditEvent(
                action=action,
                outcome=_outcome(status),
                subject=principal.subject if principal else "unauthenticated",
                method=principal.method if principal else "oidc",
                source="dicomweb",
                peer=client[0] if client else None,
                tenant=note.get("tenant"),
                detail=detail,
                study_uid=uids.get("study_uid"),
                series_uid=uids.get("series_uid"),
                sop_uid=uids.get("sop_uid"),
            )
        )
