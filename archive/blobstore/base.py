"""The blob store interface: stage bytes in a local spool file, then commit them under a key.

Staging first lets the receipt read the header and decide the key before anything is visible,
and lets a bad object be dropped without ever touching stored data. `commit` returns only when
the object is durable.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

CHUNK = 1024 * 1024


@dataclass(frozen=True)
class StagedBlob:
    path: Path
    size: int
    sha256: str
    synced: bool = False  # its bytes are on stable storage already (BlobStore.make_durable)


class BlobNotFound(KeyError):
    pass


@dataclass(frozen=True)
class BlobInfo:
    key: str
    size: int
    modified: float  # seconds since the epoch: when the object was last written


class SpoolWriter:
    """Bytes arriving piece by piece (a multipart body, a network stream) into one spool file,
    hashed on the way so nothing is read twice."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file = open(path, "wb")
        self._digest = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> None:
        self._file.write(data)
        self._digest.update(data)
        self.size += len(data)

    def finish(self) -> StagedBlob:
        self._file.close()
        return StagedBlob(self.path, self.size, self._digest.hexdigest())

    def abort(self) -> None:
        self._file.close()
        self.path.unlink(missing_ok=True)


def hash_file(path: Path) -> tuple[int, str]:
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as fh:
        while chunk := fh.read(CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return size, digest.hexdigest()


class BlobStore(ABC):
    def __init__(self, spool_dir: Path) -> None:
        self.spool_dir = spool_dir
        spool_dir.mkdir(parents=True, exist_ok=True)

    # staging ----------------------------------------------------------------------------------

    def new_spool_file(self) -> Path:
        fd, name = tempfile.mkstemp(dir=self.spool_dir, suffix=".part")
        os.close(fd)
        return Path(name)

    def spool_writer(self) -> "SpoolWriter":
        return SpoolWriter(self.new_spool_file())

    def stage_stream(self, chunks: Iterable[bytes]) -> StagedBlob:
        writer = self.spool_writer()
        try:
            for chunk in chunks:
                writer.write(chunk)
        except BaseException:
            writer.abort()
            raise
        return writer.finish()

    def stage_bytes(self, data: bytes) -> StagedBlob:
        return self.stage_stream([data])

    def stage_file(self, path: Path) -> StagedBlob:
        """Adopt a finished file in the spool directory (e.g. one pynetdicom wrote)."""
        size, sha = hash_file(path)
        return StagedBlob(Path(path), size, sha)

    def make_durable(self, staged: StagedBlob) -> StagedBlob:
        """The staged bytes on stable storage now, so that `commit` (inside a receipt's transaction)
        only moves them into place. A store that makes bytes durable only as it commits (S3)
        returns the blob as it is."""
        return staged

    def discard(self, staged: StagedBlob) -> None:
        staged.path.unlink(missing_ok=True)

    def put_bytes(self, key: str, data: bytes) -> StagedBlob:
        staged = self.stage_bytes(data)
        self.commit(staged, key)
        return staged

    # the backend's part -----------------------------------------------------------------------

    @abstractmethod
    def commit(self, staged: StagedBlob, key: str) -> None:
        """Make the staged bytes durable under `key` (replacing what was there) and drop the spool file."""

    @abstractmethod
    def iter_chunks(self, key: str, start: int = 0, end: int | None = None) -> Iterator[bytes]:
        """The bytes of `key` from `start` up to, not including, `end`."""

    @abstractmethod
    def size(self, key: str) -> int: ...

    @abstractmethod
    def exists(self, key: str) -> bool: ...

    @abstractmethod
    def delete(self, key: str) -> None: ...

    @abstractmethod
    def list_blobs(self) -> Iterator[BlobInfo]:
        """Every stored object (never a spool file), in no particular order."""

    @abstractmethod
    def info(self, key: str) -> BlobInfo: ...

    @abstractmethod
    def local_path(self, key: str) -> Path | None:
        """A path pydicom can open directly, when the backend has one."""

    @contextmanager
    def local_copy(self, key: str) -> Iterator[Path]:
        """A file path with the blob's bytes: the blob itself on disk, else a spooled copy."""
        local = self.local_path(key)
        if local is not None:
            if not local.exists():
                raise BlobNotFound(key)
            yield local
            return
        staged = self.stage_stream(self.iter_chunks(key))
        try:
            yield staged.path
        finally:
            self.discard(staged)

    def read_bytes(self, key: str) -> bytes:
        return b"".join(self.iter_chunks(key))

    def describe(self) -> str:
        return type(self).__name__
