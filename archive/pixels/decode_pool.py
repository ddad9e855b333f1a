"""Pixel decoding in a few warm subprocesses, each under a memory ceiling and a time limit per call.

A codec trusts the stream it is given: a JPEG 2000 codestream whose header declares 60000x60000
inside a DICOM object that says 1024x1024 makes openjpeg allocate gigabytes before anything can
compare the two. Receipt checks only what the DICOM header declares (archive/pixels/limits.py), so every
decode runs here, where such a stream costs one worker process (replaced on the next call) and the
caller gets DecodeRefused with a reason instead of its own process being killed. A worker also
refuses, before any codec sees it, a frame whose codestream header describes another image than
Rows and Columns (archive/pixels/codestream.py): the ceiling is then left for what the header admits.

Workers are started with fork+exec (subprocess), not multiprocessing's spawn or forkserver: both
of those re-import the parent's `__main__` in every child, and in a Ray process that is Ray's
default_worker.py (all of Ray: measured 0.43 s, +80 MB VmSize and +57 MB RSS per worker before it
has decoded anything). Nothing runs between fork and exec, so the threaded parent is as safe as
with spawn.
"""

from __future__ import annotations

import atexit
import logging
import os
import pickle
import resource
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, Literal, TypeVar

from archive.pixels.codestream import CodestreamMismatch, guard_pydicom_decoding
from archive.pixels.limits import DecodeLimits

T = TypeVar("T")
MiB = 2**20

# Measured with Python 3.11, numpy 2.4, pydicom 3.0, pylibjpeg 2.1 (openjpeg, libjpeg, rle), pyjpegls
# and Pillow, one BLAS thread and one malloc arena: a worker ready to serve has VmSize 148 MB (RSS
# 58 MB); after decoding with every codec, VmSize 164 MB, VmPeak 186 MB (RSS 76 MB). The margin covers
# that, the header, a compressed frame and the codecs' tables; each frame's own decoding is
# budgeted on top (DECODE_FRAME_FACTOR in archive/config/settings.py).
START_SECONDS = 60.0  # a cold interpreter on a loaded 2-core machine takes ~1 s
ORPHAN_CHECK_SECONDS = 1.0
MESSAGE_CHARS = 400

Reason = Literal["too_large", "undecodable", "crashed", "timeout", "busy", "unavailable"]
# the same object would be refused again: a retry only repeats the work
DETERMINISTIC: frozenset[str] = frozenset({"too_large", "undecodable", "crashed"})


class DecodeRefused(Exception):
    """Decoding was not done; `reason` says why in one word, the message in words."""

    def __init__(self, reason: Reason, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason

    def __reduce__(self) -> tuple[Any, ...]:
        return DecodeRefused, (self.reason, str(self))  # Ray pickles exceptions that cross actors

    @property
    def deterministic(self) -> bool:
        return self.reason in DETERMINISTIC


class CallerError(Exception):
    """A problem with the request (no such frame), not with decoding: re-raised in the caller as is."""


class DecodePool:
    """Up to `limits.workers` worker processes, started on first use and kept warm. Blocking calls,
    safe from many threads; a call waits at most `timeout_seconds` for a free worker."""

    def __init__(self, limits: DecodeLimits) -> None:
        self.limits = limits
        self._slots = threading.BoundedSemaphore(limits.workers)
        self._idle: list[_Worker] = []
        self._lock = threading.Lock()
        self._closed = False

    def run(self, fn: Callable[..., T], *args: Any, deadline: float | None = None) -> T:
        """fn(*args) in a worker. fn must be a module-level function; pass paths and plain values.
        With a `deadline` (time.monotonic()), waiting and decoding both end by then: the calls of
        one request share one budget, where progress() would give each step a new one."""
        wait = _left(self.limits.timeout_seconds, deadline)
        if wait <= 0:
            raise DecodeRefused(
                "timeout", f"this request's decoding took longer than decode_timeout_seconds={self.limits.timeout_seconds:g}"
            )
        if not self._slots.acquire(timeout=wait):
            raise DecodeRefused("busy", f"all {self.limits.workers} decode workers stayed busy for {wait:.3g} s; try again")
        try:
            return self._run_once(fn, args, deadline)
        finally:
            self._slots.release()

    def warm(self) -> None:
        """Start one worker now, so the first request does not pay for a process start."""
        self.run(worker_memory)

    def __enter__(self) -> DecodePool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for worker in idle:
            worker.kill()

    def _run_once(self, fn: Callable[..., T], args: tuple[Any, ...], deadline: float | None = None) -> T:
        worker = self._take()
        try:
            answer = worker.call(fn, args, self.limits.timeout_seconds, deadline)
        except _NotDelivered:  # it died while idle: the object is not to blame
            worker.kill()
            worker = self._start()
            answer = worker.call(fn, args, self.limits.timeout_seconds, deadline)
        except BaseException:
            worker.kill()
            raise
        settled: T = self._settle(worker, answer)
        return settled

    def _settle(self, worker: _Worker, answer: tuple[Any, ...]) -> Any:
        kind = answer[0]
        if kind == "refused" and answer[1] == "too_large":
            worker.kill()  # a MemoryError may have left a C library half done
        else:
            self._give_back(worker)
        if kind == "ok":
            return answer[1]
        if kind == "raise":
            raise answer[1]
        raise DecodeRefused(answer[1], answer[2])

    def _take(self) -> _Worker:
        with self._lock:
            while self._idle:
                worker = self._idle.pop()
                if worker.alive():
                    return worker
        return self._start()

    def _start(self) -> _Worker:
        if self._closed:
            raise DecodeRefused("unavailable", "the decode pool is closed")
        return _Worker(self.limits.memory_bytes)

    def _give_back(self, worker: _Worker) -> None:
        with self._lock:
            if not self._closed:
                self._idle.append(worker)
                return
        worker.kill()


def _left(timeout: float, deadline: float | None) -> float:
    """The wait allowed now: `timeout`, or less when the caller's deadline is nearer."""
    return timeout if deadline is None else min(timeout, deadline - time.monotonic())


_shared: dict[DecodeLimits, DecodePool] = {}
_shared_lock = threading.Lock()


def shared_pool(limits: DecodeLimits) -> DecodePool:
    """This process's pool for these limits: one set of warm workers however many callers ask."""
    with _shared_lock:
        pool = _shared.get(limits)
        if pool is None:
            pool = _shared[limits] = DecodePool(limits)
        return pool


@atexit.register
def _close_shared() -> None:
    with _shared_lock:
        pools = list(_shared.values())
    for pool in pools:
        pool.close()


# the parent's end of one worker -------------------------------------------------------------


class _NotDelivered(Exception):
    pass


_ENTRY = "from archive.pixels.decode_pool import serve; serve()"


class _Worker:
    def __init__(self, memory_bytes: int) -> None:
        ours, theirs = socket.socketpair()
        with ours, theirs:
            self.process = subprocess.Popen(
                [sys.executable, "-c", _ENTRY, "dicomflow-decode-worker", str(theirs.fileno()), str(memory_bytes)],
                pass_fds=(theirs.fileno(),),
                stdin=subprocess.DEVNULL,
                env=_worker_env(),
            )
            self.channel = Connection(ours.detach())
        self._await_ready(memory_bytes)

    def _await_ready(self, memory_bytes: int) -> None:
        try:
            if self.channel.poll(START_SECONDS) and self.channel.recv()[0] == "ready":
                return
        except (EOFError, OSError):
            pass
        self.kill()
        raise DecodeRefused(
            "unavailable",
            f"a decode worker did not start within decode_memory_bytes={memory_bytes} "
            f"({self._death()}); the setting may be below the interpreter's own needs",
        )

    def alive(self) -> bool:
        return self.process.poll() is None

    def call(
        self, fn: Callable[..., Any], args: tuple[Any, ...], timeout: float, deadline: float | None = None
    ) -> tuple[Any, ...]:
        try:
            self.channel.send((fn, args))
        except OSError:
            raise _NotDelivered() from None
        while True:
            if not self.channel.poll(max(0.0, _left(timeout, deadline))):
                self.kill()
                raise DecodeRefused("timeout", f"decoding took longer than decode_timeout_seconds={timeout:g}")
            try:
                answer: tuple[Any, ...] = self.channel.recv()
            except (EOFError, OSError):
                raise DecodeRefused("crashed", f"the decode worker died ({self._death()}) decoding this object") from None
            if answer[0] != "progress":
                return answer

    def kill(self) -> None:
        if self.alive():
            self.process.kill()
        self.process.wait()
        self.channel.close()

    def _death(self) -> str:
        try:
            code = self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            return "no exit status"
        if code >= 0:
            return f"exit status {code}"
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"


def _worker_env() -> dict[str, str]:
    """One BLAS thread and one malloc arena: a worker decodes one thing at a time, and each extra
    thread or arena reserves address space that RLIMIT_AS counts."""
    root = str(Path(__file__).resolve().parents[2])
    path = os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)
    return {
        **os.environ,
        "PYTHONPATH": path,
        "OPENBLAS_NUM_THREADS": "1",
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
        "MALLOC_ARENA_MAX": "1",
    }


# the worker's side ---------------------------------------------------------------------------


def _load_codecs() -> None:
    """Decode a tiny image and encode it as JPEG, so pydicom's pixel handlers and Pillow's encoder
    are loaded (~60 ms) before a caller waits for them."""
    import io

    import numpy as np
    from PIL import Image
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian

    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.Rows = ds.Columns = 8
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.PixelData = np.arange(64, dtype=np.uint16).tobytes()
    pixels = (ds.pixel_array >> 4).astype(np.uint8)
    Image.fromarray(pixels).save(io.BytesIO(), format="JPEG")


_channel: Connection | None = None


def progress() -> None:
    """Long decodes call this between frames: the caller's timeout then applies per step. A no-op
    outside a worker."""
    if _channel is not None:
        _channel.send(("progress",))


def worker_memory() -> dict[str, int]:
    """This process's VmSize, VmPeak and VmRSS in bytes (for the ceiling's margin and for tests)."""
    sizes = {}
    with open("/proc/self/status") as status:
        for line in status:
            key, _, value = line.partition(":")
            if key in ("VmSize", "VmPeak", "VmRSS"):
                sizes[key] = int(value.split()[0]) * 1024
    return sizes


class _MemoryShortage(logging.Handler):
    """pydicom tries every decoding plugin and reports their failures as one RuntimeError of
    messages; it logs each plugin's exception first, which is where a MemoryError is still one."""

    def __init__(self) -> None:
        super().__init__()
        self.seen = False

    def emit(self, record: logging.LogRecord) -> None:
        kind = record.exc_info[0] if record.exc_info else None
        if kind is not None and issubclass(kind, _TOO_LARGE):
            self.seen = True


# what a decode raises when the image is too large for the worker (Pillow's own pixel-count guard
# joins once Pillow is imported)
_TOO_LARGE: tuple[type[BaseException], ...] = (MemoryError,)


def serve() -> None:
    """The worker's main loop (argv: marker, socket fd, memory bytes)."""
    global _channel
    fd, memory = int(sys.argv[2]), int(sys.argv[3])
    hard = resource.getrlimit(resource.RLIMIT_AS)[1]
    memory = memory if hard == resource.RLIM_INFINITY else min(memory, hard)
    resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # a crashing codec must not write gigabytes of core
    _watch_parent(os.getppid())
    _channel = channel = Connection(fd)
    shortage = _warm()
    channel.send(("ready",))
    while True:
        try:
            request = channel.recv_bytes()
        except EOFError:
            return
        channel.send_bytes(_encoded(_answer(request, shortage)))


def _warm() -> _MemoryShortage:
    global _TOO_LARGE
    from PIL import Image

    _TOO_LARGE = (MemoryError, Image.DecompressionBombError)
    guard_pydicom_decoding()  # before anything is decoded here, the warm-up's own image included
    _load_codecs()
    shortage = _MemoryShortage()
    logging.getLogger("pydicom").addHandler(shortage)
    return shortage


def _answer(request: bytes, shortage: _MemoryShortage) -> tuple[Any, ...]:
    shortage.seen = False
    try:
        fn, args = pickle.loads(request)
        return ("ok", fn(*args))
    except CallerError as err:
        return ("raise", err)
    except CodestreamMismatch as err:  # refused before any codec ran: the reason is the whole story
        return ("refused", "undecodable", f"cannot decode: {err}"[:MESSAGE_CHARS])
    except Exception as err:  # noqa: BLE001 - whatever a codec raises is an answer about this object
        if isinstance(err, _TOO_LARGE) or shortage.seen:
            return ("refused", "too_large", _too_large(err))
        return ("refused", "undecodable", f"cannot decode: {_said(err)}")


def _too_large(err: BaseException) -> str:
    limit = resource.getrlimit(resource.RLIMIT_AS)[0]
    return f"decoding needs more memory than decode_memory_bytes={limit} allows ({_said(err)})"


def _said(err: BaseException) -> str:
    """The exception on one line, short enough for an HTTP answer or an index column."""
    return " ".join(f"{type(err).__name__}: {err}".split())[:MESSAGE_CHARS]


def _encoded(answer: tuple[Any, ...]) -> bytes:
    try:
        return pickle.dumps(answer, protocol=pickle.HIGHEST_PROTOCOL)
    except MemoryError as err:  # the answer itself does not fit
        return pickle.dumps(("refused", "too_large", _too_large(err)))
    except Exception as err:  # noqa: BLE001 - e.g. an exception that cannot be pickled
        return pickle.dumps(("refused", "undecodable", f"cannot return the result: {_said(err)}"))


def _watch_parent(parent: int) -> None:
    """Exit when the caller is gone (a Ray worker is often ended with SIGKILL, skipping atexit)."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(ORPHAN_CHECK_SECONDS)
        os._exit(0)

    threading.stack_size(256 * 1024)  # address space counts against RLIMIT_AS
    threading.Thread(target=watch, name="orphan-watch", daemon=True).start()
