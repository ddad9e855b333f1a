"""A progress line for long sends: files, MB, instances/s and the time left."""

from __future__ import annotations

import sys
import threading
import time
from typing import TextIO


class Progress:
    def __init__(self, files: int, size: int, out: TextIO = sys.stderr) -> None:
        self.files, self.size, self.out = files, size, out
        self.done_files = self.done_bytes = 0
        self.started = time.monotonic()
        self._last = 0.0
        self._lock = threading.Lock()
        self._tty = out.isatty()

    def advance(self, size: int) -> None:
        with self._lock:
            self.done_files += 1
            self.done_bytes += size
            now = time.monotonic()
            if now - self._last >= (0.2 if self._tty else 5.0) or self.done_files == self.files:
                self._last = now
                self._show(now)

    def _show(self, now: float) -> None:
        elapsed = max(now - self.started, 1e-6)
        rate = self.done_files / elapsed
        left = (self.files - self.done_files) / rate if rate else 0.0
        line = (
            f"  {self.done_files}/{self.files} files  {self.done_bytes / 1e6:.1f}/{self.size / 1e6:.1f} MB  "
            f"{rate:.0f} instances/s  ETA {int(left // 60)}:{int(left % 60):02d}"
        )
        self.out.write(("\r" + line) if self._tty else line + "\n")
        if self._tty and self.done_files == self.files:
            self.out.write("\n")
        self.out.flush()
