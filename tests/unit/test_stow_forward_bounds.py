"""A STOW-RS destination is another system: its answer is read only up to a bound, against a real
HTTP server on loopback that answers far more than any STOW-RS response needs."""

from __future__ import annotations

import asyncio
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from activities import stow_forward


class _Flood(BaseHTTPRequestHandler):
    def do_POST(self) -> None:  # noqa: N802 - the base class's name
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.send_response(200)
        self.send_header("Content-Type", "application/dicom+json")
        self.end_headers()
        chunk = b"[" + b" " * 65536
        for _ in range(200):  # 12.5 MiB, more than MAX_RESPONSE_BYTES
            self.wfile.write(chunk)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass


class _Small(_Flood):
    def do_POST(self) -> None:  # noqa: N802
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        body = b'{"00081190": {"vr": "UR", "Value": ["x"]}}'
        self.send_response(200)
        self.send_header("Content-Type", "application/dicom+json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def _serve(handler: type[BaseHTTPRequestHandler]) -> ThreadingHTTPServer:
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


async def _post(port: int) -> httpx.Response:
    async with httpx.AsyncClient(timeout=30) as http:
        return await stow_forward._bounded(http, f"http://127.0.0.1:{port}/studies", content=b"x")


def test_a_flood_is_cut_off_at_the_bound_and_a_real_answer_passes() -> None:
    flood, small = _serve(_Flood), _serve(_Small)
    try:
        with pytest.raises(stow_forward.ResponseTooLarge):
            asyncio.run(_post(flood.server_address[1]))
        answer = asyncio.run(_post(small.server_address[1]))
        assert answer.status_code == 200 and answer.json()["00081190"]["Value"] == ["x"]
    finally:
        flood.shutdown()
        small.shutdown()
