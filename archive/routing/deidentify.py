"""De-identification for forwards: PS3.15 Annex E's Basic Application Level Confidentiality
Profile, applied by dicom-anonymizer, whose action per attribute comes from the standard's own
table E.1-1 (its 2024b edition), not from a list written here.

Chosen over dicognito, which shifts dates and invents plausible names (a different option of the
profile), and deid, which needs a recipe written per site: the Basic Profile is what a research
partner asks for by name. One thing is ours: the new UIDs. dicom-anonymizer draws them at random
per process; a research archive needs the same study to keep the same new UIDs whatever worker
sends it and whenever, so each is derived from the original by a keyed hash per destination
(a 2.25 UID), and the library is handed that mapping.
"""

from __future__ import annotations

import hashlib
import hmac
import threading
from collections.abc import Iterator

from dicomanonymizer import simpledicomanonymizer
from dicomanonymizer.simpledicomanonymizer import anonymize_dataset, initialize_actions_2024b
from pydicom.dataset import Dataset

PROFILES = ("basic",)
METHOD = "PS3.15 E.1 Basic Profile, dicomflow"  # LO: at most 64 characters
# dicom-anonymizer keeps its UID mapping in one module-wide dictionary: one dataset at a time
_library = threading.Lock()


class NotReleasable(ValueError):
    """An object the profile cannot make safe (burned-in annotation): it is not sent."""


def destination_key(secret: str, destination: str) -> bytes:
    """The key of one destination's UID mapping: two destinations cannot link their copies."""
    return hmac.new(secret.encode(), destination.encode(), hashlib.sha256).digest()


def consistent_uid(key: bytes, original: str) -> str:
    """A 2.25 UID (PS3.5 B.2: a 128-bit number) from a keyed hash of the original: the same for the
    same destination every time, unlinkable without the key. (pydicom's generate_uid ignores its
    entropy sources for 2.25 UIDs and draws a random UUID.)"""
    digest = hmac.new(key, original.encode(), hashlib.sha256).digest()
    return f"2.25.{int.from_bytes(digest[:16], 'big')}"


def _uids(ds: Dataset) -> Iterator[str]:
    for element in ds.iterall():
        if element.VR == "UI" and element.value:
            values = [element.value] if isinstance(element.value, str) else list(element.value)
            yield from (str(v) for v in values if v)


def deidentify(ds: Dataset, profile: str, key: bytes) -> None:
    """`ds` de-identified in place; NotReleasable when it must not leave at all."""
    if profile not in PROFILES:
        raise ValueError(f"unknown de-identification profile {profile!r}; one of {', '.join(PROFILES)}")
    if str(ds.get("BurnedInAnnotation", "")).upper() == "YES":
        raise NotReleasable("BurnedInAnnotation is YES: identifying text may be in the pixels")
    mapping = {uid: consistent_uid(key, uid) for uid in _uids(ds)}
    with _library:
        simpledicomanonymizer.dictionary.clear()
        simpledicomanonymizer.dictionary.update(mapping)
        try:
            anonymize_dataset(ds, delete_private_tags=True, base_rules_gen=initialize_actions_2024b)
        finally:
            simpledicomanonymizer.dictionary.clear()
    ds.PatientIdentityRemoved = "YES"
    ds.DeidentificationMethod = METHOD
    if hasattr(ds, "file_meta") and "SOPInstanceUID" in ds:
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
