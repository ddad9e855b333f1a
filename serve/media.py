"""Accept headers in, multipart/related bodies out."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterable

from serve.multipart_stream import MediaType, parse_media_type


class NotAcceptable(ValueError):
    """Answered with 406 and this message."""


def parse_accept(header: str | None) -> list[MediaType]:
    """Media ranges in the order given; an absent header means 'anything'."""
    if not header or not header.strip():
        return [MediaType("*/*", {})]
    ranges, depth, start = [], 0, 0
    for i, ch in enumerate(header + ","):
        if ch == '"':
            depth ^= 1
        elif ch == "," and not depth:
            part = header[start:i].strip()
            if part:
                ranges.append(parse_media_type(part))
            start = i + 1
    return ranges


def wanted_part(ranges: list[MediaType], default_type: str) -> list[tuple[str, str | None]]:
    """(part media type, transfer syntax or None) pairs a client accepts, best first."""
    out = []
    for media in ranges:
        if media.essence in ("*/*", "multipart/related", "multipart/*"):
            part = media.params.get("type", default_type).strip('"').lower()
        else:
            part = media.essence
        out.append((part, media.params.get("transfer-syntax")))
    return out


class Multipart:
    def __init__(self) -> None:
        self.boundary = uuid.uuid4().hex

    def content_type(self, part_type: str, transfer_syntax: str | None = None) -> str:
        value = f'multipart/related; type="{part_type}"; boundary={self.boundary}'
        return value + (f"; transfer-syntax={transfer_syntax}" if transfer_syntax else "")

    def head(self, content_type: str, location: str | None = None) -> bytes:
        extra = f"Content-Location: {location}\r\n" if location else ""
        return f"--{self.boundary}\r\nContent-Type: {content_type}\r\n{extra}\r\n".encode()

    def tail(self) -> bytes:
        return f"--{self.boundary}--\r\n".encode()

    def whole(self, parts: Iterable[tuple[str, bytes]]) -> bytes:
        chunks = []
        for content_type, data in parts:
            chunks += [self.head(content_type), data, b"\r\n"]
        return b"".join(chunks) + self.tail()


async def iterate(chunks: Iterable[bytes]) -> AsyncIterator[bytes]:
    for chunk in chunks:
        yield chunk
