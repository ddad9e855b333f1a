"""DICOM JSON (PS3.18 F.2) for instances and whole series, with BulkDataURIs for large binaries."""

from __future__ import annotations

import base64
import gzip
import json
import logging
import math
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from pydicom import dcmread
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset
from pydicom.tag import BaseTag
from pydicom.uid import UID, ExplicitVRLittleEndian

from archive.dicom.dicom_json_raw import raw_json
from archive.dicom.header import InvalidObject, stored_dataset

log = logging.getLogger("dicomflow.json")
BULK_THRESHOLD = 1024  # binary values above this many bytes are served by reference
# BulkDataURIs in stored documents are relative to this root; the read side swaps in the caller's base URL
DICOMWEB_ROOT = "/dicomweb"
# Moved whenever what this module writes for the same file changes; a series document written in
# another format is stale (archive/index/reads.SeriesMetadata.document_fresh) and WADO-RS builds the
# answer afresh. 2: BulkDataURIs inside sequence items name their path, NaN/Infinity are null, and
# the Pixel Data VR comes from the header walk (documents before had none of these).
DOCUMENT_FORMAT = 2


def instance_base(root: str, study_uid: str, series_uid: str, sop_uid: str) -> str:
    return f"{root}/studies/{study_uid}/series/{series_uid}/instances/{sop_uid}"


BulkHandler = Callable[[DataElement], str]


def bulk_uris(base_uri: str) -> Callable[[str], BulkHandler]:
    """BulkDataURIs that name the element's place: `{base}/bulkdata/{tag}` at the top level, and
    `{base}/bulkdata/{sequence tag}/{item index}/.../{tag}` inside items (an icon's pixels are not
    the image's; serve/wado_pixels resolves the path)."""

    def at(prefix: str) -> BulkHandler:
        return lambda element: f"{base_uri}/bulkdata/{prefix}{element.tag:08X}"

    return at


def dataset_json(ds: Dataset, base_uri: str) -> dict[str, Any]:
    out = json_elements(ds, BULK_THRESHOLD, bulk_uris(base_uri))
    for keyword, tag in _IDENTITY.items():  # a UID kept under uid_policy lenient fails that check, but is the identity
        if tag not in out and keyword in ds:
            out[tag] = {"vr": "UI", "Value": [str(ds[keyword].value)]}
    return out


def json_elements(
    ds: Dataset, bulk_data_threshold: int, bulk_data_uris: Callable[[str], BulkHandler] | None = None
) -> dict[str, Any]:
    """`ds` as DICOM JSON; an element whose value cannot be written (say a DS of 'P1:') is left out
    rather than losing the whole instance's. Not pydicom's `suppress_invalid_tags=True`: that
    switches the process-wide reading mode to RAISE while it runs (`config.strict_reading`), so
    receipts in other threads refused valid-enough objects, and two overlapping calls could leave
    it switched for good (found by the 1,000-case fuzz run)."""
    out: dict[str, Any] = {}
    bulk = bulk_data_uris("") if bulk_data_uris is not None else None
    for tag in ds.keys():
        try:
            out[f"{tag:08X}"] = _element_json(ds, tag, bulk_data_threshold, bulk_data_uris, "", bulk)
        except Exception as err:  # noqa: BLE001 - one element's value, whatever pydicom raises for it
            log.info("element %08X left out of DICOM JSON: %s", tag, err)
    return out


def _element_json(
    ds: Dataset, tag: BaseTag, threshold: int, uris: Callable[[str], BulkHandler] | None, path: str, bulk: BulkHandler | None
) -> dict[str, Any]:
    """One element as pydicom's to_json_dict writes it; raw plain values, small binaries and the
    items of sequences without pydicom's DataElement (pydicom converts each nested element of a
    sequence through it: a third of a header's time). An item's element that cannot be written
    fails the sequence, as in pydicom's. `path`: the items it is in, as `bulk` (its dataset's
    BulkDataURI handler) names them."""
    element = ds.get_item(tag)
    if isinstance(element, RawDataElement):
        plain = raw_json(element) if element.VR not in RAW_BINARY else _binary_json(ds, element, threshold, bulk)
        if plain is not None:
            return _finite(plain)
    converted = ds[tag]
    if converted.VR == "SQ":
        return {
            "vr": "SQ",
            "Value": [
                _item_json(item, threshold, uris, f"{path}{tag:08X}/{index}/") for index, item in enumerate(converted.value)
            ],
        }
    return _finite(converted.to_json_dict(bulk, threshold))


def _item_json(item: Dataset, threshold: int, uris: Callable[[str], BulkHandler] | None, path: str) -> dict[str, Any]:
    bulk = uris(path) if uris is not None else None  # one handler per item, not per element
    return {f"{t:08X}": _element_json(item, t, threshold, uris, path, bulk) for t in item.keys()}


_DECIMAL_VRS = frozenset({"DS", "FD", "FL"})


def _finite(element: dict[str, Any]) -> dict[str, Any]:
    """JSON has no NaN or Infinity (a browser's JSON.parse refuses the whole document): such a value
    is written as null, as an empty value is in a multi-valued element (PS3.18 F.2.5)."""
    if element.get("vr") in _DECIMAL_VRS and "Value" in element:
        values = element["Value"]
        if not all(isinstance(v, (int, str)) or v is None or math.isfinite(v) for v in values):
            element["Value"] = [v if not isinstance(v, float) or math.isfinite(v) else None for v in values]
    return element


RAW_BINARY = frozenset({"OB", "OD", "OF", "OL", "OV", "OW"})  # pydicom keeps their bytes as they are


def _binary_json(ds: Dataset, raw: RawDataElement, threshold: int, bulk: BulkHandler | None) -> dict[str, Any] | None:
    if not raw.is_little_endian or raw.length == 0xFFFFFFFF or raw.VR is None:
        return None
    data = raw.value or b""
    if not data:
        return {"vr": raw.VR}
    if bulk is not None and len(data) > (threshold // 4) * 3:  # pydicom's test: the base64 would pass the threshold
        return {"vr": raw.VR, "BulkDataURI": bulk(ds[raw.tag])}
    return {"vr": raw.VR, "InlineBinary": base64.b64encode(data).decode("ascii")}


_IDENTITY = {
    "SOPClassUID": "00080016",
    "SOPInstanceUID": "00080018",
    "StudyInstanceUID": "0020000D",
    "SeriesInstanceUID": "0020000E",
}


def _pixel_vr(ds: Dataset) -> str:
    """What the image module suggests, for a file the walk cannot read (stored before a stricter one)."""
    compressed = UID(str(ds.file_meta.get("TransferSyntaxUID", ExplicitVRLittleEndian))).is_compressed
    return "OB" if compressed or int(ds.get("BitsAllocated", 16) or 16) <= 8 else "OW"


def _read(path: Path) -> tuple[Dataset, str | None]:
    """The header and the Pixel Data's VR; an object the walk cannot finish (stored before a stricter
    one) is read by pydicom, its VR what the image module suggests."""
    try:
        return stored_dataset(path)
    except InvalidObject:
        ds = dcmread(path, stop_before_pixels=True)
        return ds, _pixel_vr(ds) if ds.get("Rows") is not None else None


def file_json(path: Path, base_uri: str) -> dict[str, Any]:
    """The metadata of one stored file: everything but the pixels, which get a BulkDataURI."""
    ds, vr = _read(path)
    out = dataset_json(ds, base_uri)
    if vr is not None:
        out["7FE00010"] = {"vr": vr, "BulkDataURI": f"{base_uri}/bulkdata/7FE00010"}
    return out


def json_text(item: dict[str, Any]) -> str:
    """One instance's JSON as it stands in a series document."""
    return json.dumps(item, separators=(",", ":"))


def gzip_json_texts(texts: Iterable[str]) -> bytes:
    """A series document from its instances' texts (json_text): the same text as json.dumps of the
    list of their items, built without converting any instance twice."""
    return gzip.compress(("[" + ",".join(texts) + "]").encode(), compresslevel=6)
