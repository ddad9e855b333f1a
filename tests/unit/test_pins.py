"""The versions that cannot move under us (issue 27, item 10): the libraries whose internals the
code patches or depends on are pinned in pyproject.toml, at the version constraints.txt holds
and the tested environment has; `make` installs through constraints.txt."""

from __future__ import annotations

import re
import tomllib
from importlib import metadata
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PINNED = ("pynetdicom", "ray", "pydicom", "temporalio")


def _dependencies() -> dict[str, str]:
    """name -> version specifier of pyproject's runtime dependencies."""
    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    out = {}
    for dep in deps:
        name, spec = re.match(r"([A-Za-z0-9_.-]+)(?:\[[^]]*\])?(.*)", dep).groups()  # type: ignore[union-attr]
        out[name.lower()] = spec.strip()
    return out


def _constraints() -> dict[str, str]:
    lines = (REPO / "constraints.txt").read_text().splitlines()
    return {n.lower(): v for n, v in (line.split("==", 1) for line in lines if line and not line.startswith("#"))}


@pytest.mark.parametrize("name", PINNED)
def test_pinned_in_pyproject_at_the_constrained_and_installed_version(name: str) -> None:
    spec, constrained = _dependencies()[name], _constraints()[name]
    assert spec == f"=={constrained}", f"pyproject pins {name}{spec}, constraints.txt says {constrained}"
    assert metadata.version(name) == constrained, f"{name} {metadata.version(name)} is installed, not the tested {constrained}"


def test_every_constraint_is_an_exact_version() -> None:
    lines = [line for line in (REPO / "constraints.txt").read_text().splitlines() if line and not line.startswith("#")]
    assert lines and all(re.fullmatch(r"[A-Za-z0-9_.-]+==[A-Za-z0-9_.+!-]+", line) for line in lines)


def test_make_installs_through_the_constraints() -> None:
    makefile = (REPO / "Makefile").read_text()
    installs = [line for line in makefile.splitlines() if "pip install" in line and "-e " in line]
    assert installs and all("-c constraints.txt" in line for line in installs)
    targets = [line for line in makefile.splitlines() if line.startswith("$(VENV)/.installed")]
    assert targets and all("constraints.txt" in line.split(":", 1)[1] for line in targets)
