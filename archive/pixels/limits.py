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


# a decode worker's interpreter with numpy, pydicom and the codecs loaded, before any image
INTERPRETER_BYTES = 512 * MiB


@dataclass(frozen=True)
class DecodeLimits:
    """What one decode worker may use (archive/pixels/decode_pool.py)."""

    memory_bytes: int  # RLIMIT_AS of each worker: its whole address space, interpreter included
    timeout_seconds: float  # per call; a long decode that reports progress() gets this much per step
    workers: int  # per calling process
