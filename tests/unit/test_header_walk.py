"""Receipt's header read: one walk notes where the indexed attributes are and pydicom converts only
those (archive/header). It must judge every object as pydicom's whole parse does, and index the
same values: real files from scanners and toolkits, and hostile variants of them."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pydicom.data
import pytest
from pydicom.dataset import Dataset

from archive.dicom.attributes import INDEXED_KEYWORDS, extract
from archive.dicom.header import HEADER_TAGS, InvalidObject, read_header
from tests.fuzz.mutations import cases

BUNDLED = Path(pydicom.data.__file__).parent / "test_files"  # not get_testdata_files: it tries the network
SKIPPED = {".md", ".txt", ".json", ".nii", ".gz", ".bval", ".bvec", ".png", ".jpg", ".py", ".csv", ".tsv", ".zip"}


def _real_files(data_dir: Path) -> list[Path]:
    shared = [p for p in sorted(data_dir.rglob("*")) if p.is_file() and p.suffix.lower() not in SKIPPED]
    return shared + sorted(p for p in BUNDLED.rglob("*") if p.is_file() and p.suffix.lower() not in SKIPPED)


def _verdict(path: Path, whole: bool) -> tuple[Any, ...]:
    try:
        header = read_header(path, lenient_uids=True, whole=whole)
        attributes = extract(header.dataset)
    except InvalidObject as err:
        return ("refused", str(err))
    except Exception as err:  # noqa: BLE001 - receipt refuses these too ("cannot parse the object")
        return ("refused", type(err).__name__)
    return (
        "taken",
        attributes,
        header.transfer_syntax,
        header.dataset_offset,
        header.nonconformance,
        header.meta_sop_instance_uid,
        len(header.dataset) <= len(HEADER_TAGS),
    )


def _same(path: Path) -> bool:
    """Both reads agree; True when the walk's own dataset was used (not pydicom's whole parse)."""
    walked, parsed = _verdict(path, whole=False), _verdict(path, whole=True)
    assert walked[:-1] == parsed[:-1], path
    return walked[0] == "taken" and walked[-1] is True


@pytest.mark.filterwarnings("ignore")
def test_the_walk_and_pydicoms_whole_parse_agree_on_every_real_file(data_dir: Path) -> None:
    walked = sum(_same(path) for path in _real_files(data_dir))
    assert walked > 900, f"only {walked} files were read by the walk; the rest went to pydicom"


@pytest.mark.filterwarnings("ignore")
def test_the_walk_and_pydicoms_whole_parse_agree_on_hostile_variants(data_dir: Path, tmp_path: Path) -> None:
    """Flipped bytes, lying lengths, cuts and splices (tests/fuzz/mutations) in the File Meta and
    the header: one of them once turned a File Meta element's VR into bytes that are none, which
    pydicom reads as implicit VR and the hand-read File Meta did not."""
    files = [p.read_bytes() for p in _real_files(data_dir) if p.suffix == ".dcm" and p.stat().st_size < 300_000]
    random.Random(1).shuffle(files)
    path = tmp_path / "mutant.dcm"
    verdicts = set()
    for _, payload in cases(files[:200], seed=7, count=1500):
        path.write_bytes(payload)
        verdicts.add(_verdict(path, whole=True)[0])
        _same(path)
    assert verdicts == {"taken", "refused"}


def test_extract_reads_only_the_attributes_the_walk_keeps() -> None:
    read: list[str] = []

    class Recording(Dataset):
        def get(self, key: Any, default: Any = None) -> Any:
            read.append(key)
            return super().get(key, default)

        def __getattr__(self, name: str) -> Any:
            read.append(name)
            return super().__getattr__(name)

    ds = Recording()
    ds.SOPClassUID = ds.SOPInstanceUID = ds.StudyInstanceUID = ds.SeriesInstanceUID = "1.2.3"
    extract(ds)
    assert set(read) - {"_dict", "_private_blocks", "_parent_encoding", "_pixel_id", "_pixel_array"} <= set(INDEXED_KEYWORDS)
    assert set(INDEXED_KEYWORDS) <= set(read)
