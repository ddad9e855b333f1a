"""What an earlier run already delivered to this target, so a second run sends only the rest."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path


def default_journal(target: str) -> Path:
    """One journal per target, under the user's cache directory (private to the user)."""
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "dicomflow" / "send"
    return base / f"{hashlib.sha256(target.encode()).hexdigest()[:16]}.txt"


def sent_before(journal: Path) -> set[str]:
    try:
        return set(journal.read_text(encoding="ascii").split())
    except FileNotFoundError:
        return set()


def remember(journal: Path, sop_uids: list[str]) -> None:
    journal.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    with journal.open("a", encoding="ascii") as out:
        out.writelines(uid + "\n" for uid in sop_uids)
