"""The lookup-table path of rendering gives exactly what transforming every pixel gives."""

from __future__ import annotations

import numpy as np
import pytest
from pydicom import dcmread
from pydicom.pixels import apply_modality_lut, pixel_array

from archive.render import _grey_levels, _to_8bit

# CT with rescale slope/intercept and MR (two encodings each), CR (MONOCHROME1), big-endian MR,
# and the LUT-sequence files that must take the direct path
FILES = ["693_UNCR.dcm", "693_UNCI.dcm", "MR2_UNCR.dcm", "RG1_UNCR.dcm", "RG3_UNCR.dcm", "emri_small_big_endian.dcm",
         "MR2_UNCI.dcm", "mlut_18.dcm", "vlut_04.dcm"]


@pytest.mark.parametrize("name", FILES)
@pytest.mark.parametrize("window", [None, (40.0, 400.0)])
def test_lookup_table_equals_per_pixel_transform(data_dir, name, window):
    found = sorted(data_dir.rglob(name))
    assert found, f"{name} is missing from the shared data"
    ds = dcmread(found[0])
    array = pixel_array(ds, index=0)
    expected = _to_8bit(apply_modality_lut(array, ds), window, ds)
    actual = _grey_levels(array, ds, window)
    assert len(np.unique(array)) > 8  # a real image: a flat one would match trivially
    assert actual.dtype == np.uint8 and np.array_equal(actual, expected)
