"""The process-wide pynetdicom settings keep pynetdicom's meaning: a context copied per association
is an independent copy with the same attributes."""

from __future__ import annotations

import copy

from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, JPEG2000Lossless
from pynetdicom import AE, build_context

import dimse


def test_supported_contexts_copy_whole_and_apart() -> None:
    dimse.install()
    ae = AE()
    ae.add_supported_context(
        "1.2.840.10008.5.1.4.1.1.4", [ExplicitVRLittleEndian, JPEG2000Lossless], scu_role=True, scp_role=False
    )
    ae.add_supported_context("1.2.840.10008.1.1")
    contexts = ae.supported_contexts
    copies = copy.deepcopy(contexts)
    for original, twin in zip(contexts, copies, strict=True):
        assert twin is not original and vars(twin) == vars(original)
    mr = next(i for i, cx in enumerate(contexts) if cx.abstract_syntax == "1.2.840.10008.5.1.4.1.1.4")
    copies[mr].add_transfer_syntax(ImplicitVRLittleEndian)
    copies[mr].scu_role = False
    assert ImplicitVRLittleEndian not in contexts[mr].transfer_syntax and contexts[mr].scu_role is True
    assert copy.deepcopy(build_context("1.2.3")).abstract_syntax == "1.2.3"
