"""`dicomflow send` as an operator runs it: a folder with scanner files, a zip, a README and a
truncated file, over C-STORE and over STOW-RS; a second run resumes from the journal."""

from __future__ import annotations

import re
import shutil
import zipfile
from pathlib import Path

import pytest
import requests
from pydicom import dcmread

from tests.auth import bearer, token
from tests.conftest import SENDER_AE


@pytest.fixture
def folder(data_dir, tmp_path) -> Path:
    root = tmp_path / "outbox"
    shutil.copytree(data_dir / "dcm_qa_nih", root / "nih")
    with zipfile.ZipFile(root / "ts.zip", "w") as archive:
        for path in sorted((data_dir / "dcm_qa_ts").rglob("*.dcm")):
            archive.write(path, f"ts/{path.name}")
    (root / "README.txt").write_text("not an image")
    whole = sorted(p for p in (data_dir / "dcm_qa_toshiba").rglob("*") if p.is_file())[0].read_bytes()
    (root / "cut.dcm").write_bytes(whole[: len(whole) - 4000])  # a transfer that broke off
    return root


def counts(output: str) -> dict[str, int]:
    line = next(line for line in output.splitlines() if line.startswith("dicomflow send:") and "stored" in line)
    return {key: int(value) for value, key in re.findall(r"(\d+) (stored|refused|sent before|not DICOM)", line)}


def test_send_over_dimse_reports_and_resumes(stack, folder, tmp_path):
    """Into a tenant of its own: the same instance stored earlier in another transfer syntax would be
    a conflict (see the duplicate policy)."""
    journal = tmp_path / "journal.txt"
    first = stack.cli("send", str(folder), "--to", "dimse", "--aet", SENDER_AE, "--journal", str(journal), timeout=300)
    assert first.returncode == 1, first.stdout + first.stderr  # the cut file was refused
    assert counts(first.stdout) == {"stored": 17, "refused": 1, "sent before": 0, "not DICOM": 1}, first.stdout
    assert "cut.dcm" in first.stdout and "README.txt" in first.stdout
    assert re.search(r"truncated|corrupt", first.stdout), first.stdout
    assert "instances/s" in first.stderr  # the progress line
    again = stack.cli("send", str(folder), "--to", "dimse", "--aet", SENDER_AE, "--journal", str(journal), timeout=300)
    assert counts(again.stdout) == {"stored": 0, "refused": 1, "sent before": 17, "not DICOM": 1}


def test_send_over_stow_with_a_token(stack, data_dir, tmp_path):
    folder = data_dir / "dcm_qa_nih"
    result = stack.cli(
        "send",
        str(folder),
        "--to",
        "stow",
        "--tenant",
        "sendstow",
        "--token",
        token(["sendstow"], ["writer"]),
        "--url",
        stack.url("/dicomweb"),
        "--journal",
        str(tmp_path / "j.txt"),
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert counts(result.stdout)["stored"] == 8
    study = str(dcmread(next(p for p in folder.rglob("*") if p.is_file()), stop_before_pixels=True).StudyInstanceUID)
    found = requests.get(stack.url(f"/dicomweb/studies/{study}/instances"), headers=bearer("sendstow", ["reader"]), timeout=30)
    assert len(found.json()) == 8


def test_send_without_a_token_is_refused_with_the_reason(stack, data_dir, tmp_path):
    result = stack.cli(
        "send",
        str(data_dir / "dcm_qa_nih"),
        "--to",
        "stow",
        "--url",
        stack.url("/dicomweb"),
        "--journal",
        str(tmp_path / "j.txt"),
        timeout=300,
    )
    assert result.returncode == 1 and "HTTP 401" in result.stdout
