"""How much one object may make the archive hold in memory, checked before anything is decoded."""

from __future__ import annotations

from dataclasses import dataclass

MiB = 2**20
GiB = 2**30


@dataclass(frozen=True)
class Limits:
    # one decoded frame: Rows x Columns x Samples x BitsAllocated (a 16k x 16k RGB frame is 768 MiB)
    max_frame_bytes: int = 1 * GiB
    # all frames together (a long cine loop or a whole-slide image is a few GiB)
    max_pixel_bytes: int = 32 * GiB
    # a Deflated Explicit VR object is inflated whole to be parsed
    max_inflated_bytes: int = 256 * MiB
