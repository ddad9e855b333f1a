"""Rendered images (PS3.18 9.4 / 8.3.5): one frame to JPEG or PNG with the VOI a viewer would use."""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from pydicom.dataset import Dataset
from pydicom.pixels.processing import apply_color_lut, apply_modality_lut, apply_voi_lut

from archive.pixels.decode_pool import DecodePool, DecodeRefused
from archive.pixels.frames import FrameNotFound, NoPixelData, frame_array, open_pixels

log = logging.getLogger("dicomflow.render")


@dataclass(frozen=True)
class RenderOptions:
    media_type: str = "image/jpeg"
    window: tuple[float, float] | None = None  # center, width
    viewport: tuple[int, int] | None = None  # width, height
    quality: int = 90


def _to_8bit(values: np.ndarray, window: tuple[float, float] | None, ds: Dataset) -> np.ndarray:
    if window is not None:
        center, width = window
        low, high = center - width / 2, center + width / 2
    elif "WindowCenter" in ds and "WindowWidth" in ds:
        return _scale(apply_voi_lut(values, ds).astype(np.float64), None)
    else:
        low, high = float(values.min()), float(values.max())
    return _scale(np.clip(values.astype(np.float64), low, high), (low, high))


def _scale(values: np.ndarray, bounds: tuple[float, float] | None) -> np.ndarray:
    low, high = bounds if bounds else (float(values.min()), float(values.max()))
    if high <= low:
        return np.zeros(values.shape, dtype=np.uint8)
    return ((values - low) * (255.0 / (high - low))).round().clip(0, 255).astype(np.uint8)


def _grey_levels(array: np.ndarray, ds: Dataset, window: tuple[float, float] | None) -> np.ndarray:
    """8-bit grey levels. Integer pixels go through a lookup table built over their own range, so
    the modality and VOI transforms run on a few thousand values instead of on every pixel. Both
    transforms are monotonic unless given as LUT sequences (those take the direct path), so the
    table's extremes are the image's and the result is the same."""
    direct = array.dtype.kind not in "iu" or "ModalityLUTSequence" in ds or "VOILUTSequence" in ds
    low, high = (0, 0) if direct else (int(array.min()), int(array.max()))
    if direct or high - low > 1 << 20:
        return _to_8bit(apply_modality_lut(array, ds), window, ds)
    table = _to_8bit(apply_modality_lut(np.arange(low, high + 1), ds), window, ds)
    return _looked_up(table, array, low)


LOOKUP_BLOCK = 1 << 20  # pixels indexed at once: the index array is 8 bytes a pixel


def _looked_up(table: np.ndarray, array: np.ndarray, low: int) -> np.ndarray:
    """table[array - low], a block of rows at a time, so a large frame's index array stays small."""
    out = np.empty(array.shape, dtype=table.dtype)
    rows = max(1, LOOKUP_BLOCK // max(1, array[0].size))
    for start in range(0, len(array), rows):
        out[start : start + rows] = table[np.subtract(array[start : start + rows], low, dtype=np.intp)]
    return out


def render(pool: DecodePool, path: Path, frame: int, options: RenderOptions) -> bytes:
    """The frame drawn by a decode worker; DecodeRefused when it cannot be, within the pool's limits."""
    return pool.run(render_file, str(path), frame, options)


def render_file(path: str | io.BytesIO, frame: int, options: RenderOptions) -> bytes:
    """The drawing itself, in whatever process calls it (a decode worker: see render)."""
    ds = open_pixels(path)
    if "PixelData" not in ds:
        raise NoPixelData("the instance has no Pixel Data to render")
    count = int(ds.get("NumberOfFrames", 1) or 1)
    if frame < 1 or frame > count:
        raise FrameNotFound(f"frame {frame} does not exist: the instance has {count} frame(s)")
    array = frame_array(path, ds, frame - 1)  # YBR is converted to RGB
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2"))
    if photometric == "PALETTE COLOR":
        image = Image.fromarray(_scale_colour(apply_color_lut(array, ds)), "RGB")
    elif array.ndim == 3:  # RGB
        image = Image.fromarray(_scale_colour(array), "RGB")
    else:
        pixels = _grey_levels(array, ds, options.window)
        if photometric == "MONOCHROME1":
            pixels = 255 - pixels
        image = Image.fromarray(pixels, "L")
    if options.viewport:
        image.thumbnail(options.viewport)
    out = io.BytesIO()
    if options.media_type == "image/png":
        image.save(out, format="PNG")
    else:
        image.save(out, format="JPEG", quality=options.quality)
    return out.getvalue()


def warm_up(pool: DecodePool) -> None:
    """Start the pool's first worker (it loads the codecs as it starts), so the first viewer does
    not wait for a process start."""
    try:
        pool.warm()
    except DecodeRefused as err:  # the requests that need decoding will say why; the rest are served
        log.warning("decode pool not warmed: %s", err)


def _scale_colour(array: np.ndarray) -> np.ndarray:
    if array.dtype == np.uint8:
        return array
    top = float(array.max()) or 1.0
    return (array.astype(np.float64) * (255.0 / top)).round().clip(0, 255).astype(np.uint8)
