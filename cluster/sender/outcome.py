"""What became of each file, as the sender reports it at the end."""

from __future__ import annotations

import threading
from collections import Counter
from dataclasses import dataclass, field

WARNINGS = {0xB000, 0xB006, 0xB007}


@dataclass
class Tally:
    stored: int = 0
    warned: int = 0
    refused: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)
    stored_uids: list[str] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def accepted(self, sop_uid: str, warning: bool = False) -> None:
        with self._lock:
            self.stored += 1
            self.warned += int(warning)
            self.stored_uids.append(sop_uid)

    def rejected(self, path: str, reason: str) -> None:
        with self._lock:
            self.refused.append((path, reason))

    def reasons(self) -> list[tuple[str, int]]:
        return Counter(reason for _, reason in self.refused).most_common()
