"""The house's imports point one way (ARCHITECTURE.md): each folder imports only the folders and
libraries its row allows. A new upward import fails here, before any stack starts."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
OURS = {
    "archive",
    "contract",
    "dimse",
    "rayfence",
    "activities",
    "workflows",
    "receiving",
    "serve",
    "actors",
    "cluster",
    "tests",
    "testkit",
    "bench",
}

# folder -> (our folders it may import, third-party packages it must not import)
RULES: dict[str, tuple[set[str], set[str]]] = {
    "archive": (set(), {"ray", "temporalio", "fastapi", "starlette", "pynetdicom"}),
    # the fence around pynetdicom's internals (dimse/__init__.py): below activities and actors
    "dimse": ({"archive"}, {"ray", "temporalio", "fastapi", "starlette"}),
    # the Temporal contract (names, ids, signals, payloads, search attributes): plain data, both sides import it
    "contract": (set(), {"pydicom", "psycopg", "redis", "minio", "ray", "fastapi", "numpy", "pynetdicom"}),
    # the fence around Ray's internals (rayfence/__init__.py): below serve and cluster
    "rayfence": (set(), {"temporalio", "fastapi", "starlette", "pynetdicom", "pydicom"}),
    "activities": ({"archive", "dimse", "contract"}, {"ray", "fastapi"}),
    "workflows": ({"contract"}, {"pydicom", "psycopg", "redis", "minio", "ray", "fastapi", "numpy"}),
    "receiving": ({"archive", "contract"}, {"ray", "fastapi"}),
    "serve": ({"archive", "contract", "rayfence", "activities", "workflows", "receiving"}, set()),
    "actors": ({"archive", "dimse", "contract", "activities", "workflows", "receiving"}, {"fastapi"}),
    "testkit": ({"archive", "contract"}, set()),
    "bench": ({"archive", "cluster", "testkit", "contract"}, set()),  # contract: to name the workflows it waits for
}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("folder", sorted(RULES))
def test_imports_point_one_way(folder: str) -> None:
    allowed, forbidden = RULES[folder]
    files = sorted((REPO / folder).rglob("*.py"))
    assert files, f"{folder}/ has no Python files: the rule would check nothing"
    wrong = []
    for path in files:
        for name in _imports(path):
            if (name in OURS and name != folder and name not in allowed) or name in forbidden:
                wrong.append(f"{path.relative_to(REPO)} imports {name}")
    assert not wrong, "\n".join(wrong)
