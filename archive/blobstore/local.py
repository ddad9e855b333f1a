"""Blobs on the local filesystem: spool file, fsync, rename, fsync of the directory."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

from archive.blobstore.base import CHUNK, BlobInfo, BlobNotFound, BlobStore, StagedBlob


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _make_dirs_durably(path: Path) -> None:
    """mkdir -p, fsyncing each new directory's parent so the new entry survives a crash."""
    missing = []
    while not path.exists():
        missing.append(path)
        path = path.parent
    for directory in reversed(missing):
        try:
            directory.mkdir()
        except FileExistsError:
            continue
        _fsync_dir(directory.parent)


class LocalBlobStore(BlobStore):
    def __init__(self, root: Path, spool_dir: Path | None = None) -> None:
        self.root = root.resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        self._root_text = str(self.root)
        self._root_prefix = self._root_text.rstrip(os.sep) + os.sep
        # the spool must be on the same filesystem, so commit is a rename and not a copy
        super().__init__(spool_dir or self.root / ".spool")

    def _path(self, key: str) -> Path:
        """The key's file under the root, checked lexically: `..` or an absolute key cannot leave the
        store. Not Path.resolve(), whose lstat of every component was a tenth of a workflow
        worker's CPU; the keys are ours (archive/blobstore/layout.py), and only someone who can already write
        inside the blob directory could plant a symlink there."""
        path = os.path.normpath(os.path.join(self._root_text, key))
        if not path.startswith(self._root_prefix):
            raise ValueError(f"blob key {key!r} leaves the store")
        return Path(path)

    def make_durable(self, staged: StagedBlob) -> StagedBlob:
        _fsync_file(staged.path)
        return replace(staged, synced=True)

    def commit(self, staged: StagedBlob, key: str) -> None:
        target = self._path(key)
        # the orphan sweeper's grace period counts from the commit, not from when the bytes arrived
        os.utime(staged.path)
        if not staged.synced:
            _fsync_file(staged.path)
        _make_dirs_durably(target.parent)
        os.replace(staged.path, target)
        _fsync_dir(target.parent)

    def iter_chunks(self, key: str, start: int = 0, end: int | None = None) -> Iterator[bytes]:
        path = self._path(key)
        try:
            fh = open(path, "rb")
        except FileNotFoundError:
            raise BlobNotFound(key) from None
        with fh:
            fh.seek(start)
            remaining = None if end is None else max(0, end - start)
            while remaining is None or remaining > 0:
                chunk = fh.read(CHUNK if remaining is None else min(CHUNK, remaining))
                if not chunk:
                    return
                if remaining is not None:
                    remaining -= len(chunk)
                yield chunk

    def size(self, key: str) -> int:
        try:
            return self._path(key).stat().st_size
        except FileNotFoundError:
            raise BlobNotFound(key) from None

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def delete(self, key: str) -> None:
        path = self._path(key)
        path.unlink(missing_ok=True)
        if path.parent.exists():
            _fsync_dir(path.parent)

    def list_blobs(self) -> Iterator[BlobInfo]:
        yield from self._walk(self.root)

    def _walk(self, directory: Path) -> Iterator[BlobInfo]:
        with os.scandir(directory) as entries:
            for entry in entries:
                path = Path(entry.path)
                if entry.is_dir(follow_symlinks=False):
                    if path != self.spool_dir:
                        yield from self._walk(path)
                elif entry.is_file(follow_symlinks=False) and not entry.name.endswith(".part"):
                    stat = entry.stat(follow_symlinks=False)
                    yield BlobInfo(path.relative_to(self.root).as_posix(), stat.st_size, stat.st_mtime)

    def info(self, key: str) -> BlobInfo:
        try:
            stat = self._path(key).stat()
        except FileNotFoundError:
            raise BlobNotFound(key) from None
        return BlobInfo(key, stat.st_size, stat.st_mtime)

    def local_path(self, key: str) -> Path | None:
        return self._path(key)

    def describe(self) -> str:
        return f"local disk {self.root}"
