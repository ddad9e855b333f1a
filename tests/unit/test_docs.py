"""The documents stay true to the code: every setting is in docs/configuration.md, and the README
links only to files that exist."""

from __future__ import annotations

import re
from pathlib import Path

from archive.config.flat_keys import flat_keys
from archive.config.settings import Settings

REPO = Path(__file__).resolve().parents[2]


def test_every_setting_is_documented() -> None:
    text = (REPO / "docs" / "configuration.md").read_text()
    missing = [key for key in flat_keys(Settings) if f"`{key}`" not in text]
    assert not missing, f"settings without a row in docs/configuration.md: {missing}"


def test_the_readme_links_to_files_that_exist() -> None:
    for document in (REPO / "README.md", *sorted((REPO / "docs").glob("*.md")), REPO / "bench" / "README.md"):
        for target in re.findall(r"\]\(([^)#]+)\)", document.read_text()):
            if target.startswith(("http://", "https://")):
                continue
            assert (document.parent / target).exists(), f"{document.name} links to {target}, which does not exist"
