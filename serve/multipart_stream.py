"""A multipart/related body, parsed as it streams in: each part goes straight to a spool file,
so a 2 GB upload never sits in memory."""

from __future__ import annotations

from dataclasses import dataclass, field
from email.message import Message

from python_multipart.multipart import MultipartParser

from archive.blobstore import BlobStore, StagedBlob
from archive.blobstore.base import SpoolWriter


class MalformedBody(ValueError):
    pass


@dataclass
class Part:
    headers: dict[str, str] = field(default_factory=dict)
    staged: StagedBlob | None = None

    @property
    def content_type(self) -> str:
        return self.headers.get("content-type", "").split(";")[0].strip().lower()


@dataclass(frozen=True)
class MediaType:
    essence: str
    params: dict[str, str]


def parse_media_type(value: str) -> MediaType:
    message = Message()
    message["content-type"] = value or ""
    found = message.get_params()
    params = {k.lower(): v for k, v in found[1:]} if found else {}
    return MediaType(message.get_content_type().lower(), params)


class MultipartStream:
    def __init__(self, boundary: str, blobs: BlobStore, max_header_size: int = 16384) -> None:
        self.blobs = blobs
        self.parts: list[Part] = []
        self._writer: SpoolWriter | None = None
        self._field = b""
        self._value = b""
        self._ended = False
        self._parser = MultipartParser(
            boundary,
            {
                "on_part_begin": self._begin,
                "on_part_data": self._data,
                "on_part_end": self._end,
                "on_header_field": lambda d, s, e: self._header_piece("_field", d, s, e),
                "on_header_value": lambda d, s, e: self._header_piece("_value", d, s, e),
                "on_header_end": self._header_end,
                "on_end": self._finished,
            },
            max_header_size=max_header_size,
        )

    def _begin(self) -> None:
        self.parts.append(Part())
        self._writer = self.blobs.spool_writer()

    def _header_piece(self, attr: str, data: bytes, start: int, end: int) -> None:
        setattr(self, attr, getattr(self, attr) + data[start:end])

    def _header_end(self) -> None:
        self.parts[-1].headers[self._field.decode("latin-1").strip().lower()] = self._value.decode("latin-1").strip()
        self._field = self._value = b""

    def _data(self, data: bytes, start: int, end: int) -> None:
        assert self._writer is not None  # the parser begins a part before its data
        self._writer.write(data[start:end])

    def _end(self) -> None:
        assert self._writer is not None
        self.parts[-1].staged = self._writer.finish()
        self._writer = None

    def _finished(self) -> None:
        self._ended = True

    def feed(self, chunk: bytes) -> None:
        try:
            self._parser.write(chunk)
        except Exception as err:  # noqa: BLE001 - the parser's own errors say what was wrong with the body
            raise MalformedBody(f"malformed multipart body: {err}") from None

    def finish(self) -> list[Part]:
        self._parser.finalize()
        if not self._ended or self._writer is not None:
            raise MalformedBody("malformed multipart body: it ends before the closing boundary")
        if not self.parts:
            raise MalformedBody("the multipart body has no parts")
        return self.parts

    def discard(self) -> None:
        """Drop every spool file this body made (a refused or broken request)."""
        if self._writer is not None:
            self._writer.abort()
            self._writer = None
        for part in self.parts:
            if part.staged is not None:
                self.blobs.discard(part.staged)
