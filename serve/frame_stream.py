"""WADO-RS frames sent as they are made: a multipart answer that holds one batch of frames at a
time (archive/pixels/frames.py's BATCH_BYTES), not the whole list joined in memory (seen: 300 MiB of
body and +600 MiB of replica peak for one request)."""

from __future__ import annotations

import logging
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator
from contextlib import ExitStack
from pathlib import Path

from fastapi.responses import Response, StreamingResponse

from archive.blobstore import BlobStore
from archive.pixels.frames import FrameReader, batches, decoded_frame_bytes
from serve.media import Multipart

log = logging.getLogger("dicomflow.pixels")
Produce = Callable[[list[int]], Awaitable[list[bytes]]]
# frames smaller than this go out several to a message: each message crosses from the replica to
# its proxy on its own, and a message per 8 KB frame costs more than the frame
MESSAGE_BYTES = 1 << 20


class OpenedFrames:
    """A stored object's file (a local copy, for remote blob stores) and its frame reader, held
    open while the answer streams; the list is checked against the object on opening."""

    def __init__(self, blobs: BlobStore, blob_key: str, numbers: list[int]) -> None:
        self._stack = ExitStack()
        try:
            self.path: Path = self._stack.enter_context(blobs.local_copy(blob_key))
            self.reader = self._stack.enter_context(FrameReader(self.path))
            self.reader.check(numbers)
        except BaseException:
            self._stack.close()
            raise
        # closed by close(), or when the answer is dropped unsent: a stream that never started (the
        # client gone before the headers went) never runs its own cleanup, and a remote store's
        # local copy is a temporary file
        self._closer = weakref.finalize(self, self._stack.close)
        self.batches = batches(numbers, decoded_frame_bytes(self.reader.ds))

    def stored(self, numbers: list[int]) -> list[bytes]:
        return [self.reader.frame(n) for n in numbers]

    def close(self) -> None:
        self._closer()


def frame_response(
    first: list[bytes], opened: OpenedFrames, produce: Produce, part_type: str, media_type: Callable[[Multipart], str]
) -> Response:
    """The answer: `first` (the first batch, made before the status was chosen, so that its
    refusal still had its own status), then each later batch made by `produce` as it is sent.
    An answer of one batch goes whole, as before: it is at most BATCH_BYTES, and frames/1 (most
    of what viewers ask) keeps the plain response its latency was measured with."""
    multipart = Multipart()
    if len(opened.batches) == 1:
        opened.close()
        return Response(multipart.whole((part_type, frame) for frame in first), media_type=media_type(multipart))
    body = _parts(multipart, part_type, _batches([first], opened, produce))
    return StreamingResponse(body, media_type=media_type(multipart))


async def _batches(ready: list[list[bytes]], opened: OpenedFrames, produce: Produce) -> AsyncIterator[list[bytes]]:
    try:
        yield ready.pop()  # popped, so that nothing here holds a batch already sent
        for numbers in opened.batches[1:]:
            yield await _made(produce, numbers, opened)
    finally:
        opened.close()


async def _parts(multipart: Multipart, part_type: str, frames_made: AsyncIterator[list[bytes]]) -> AsyncIterator[bytes]:
    async for frames in frames_made:
        for message in _messages(_pieces(multipart, part_type, frames)):
            yield message
        del frames  # the next batch is made without this one in memory
    yield multipart.tail()


async def _made(produce: Produce, numbers: list[int], opened: OpenedFrames) -> list[bytes]:
    try:
        return await produce(numbers)
    except Exception as err:
        # the status has been sent: ending the answer early is all that is left (the log says why)
        log.warning("frames %s... of %s could not be sent, answer cut short: %s", numbers[:3], opened.path.name, err)
        raise


def _pieces(multipart: Multipart, part_type: str, frames: list[bytes]) -> Iterator[bytes]:
    for frame in frames:
        yield multipart.head(part_type)
        yield frame
        yield b"\r\n"


def _messages(pieces: Iterable[bytes]) -> Iterator[bytes]:
    """Small pieces joined up to MESSAGE_BYTES; a large frame goes alone, never copied into a join."""
    pending: list[bytes] = []
    size = 0
    for piece in pieces:
        if len(piece) >= MESSAGE_BYTES:
            if pending:
                yield b"".join(pending)
                pending, size = [], 0
            yield piece
            continue
        pending.append(piece)
        size += len(piece)
        if size >= MESSAGE_BYTES:
            yield b"".join(pending)
            pending, size = [], 0
    if pending:
        yield b"".join(pending)
