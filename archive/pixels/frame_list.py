"""The frame list of a WADO-RS frames request (`frames/1,3,5`), checked before any frame is read.

Each number in the list is a frame sent, so the list is what a request costs: a 600-character list
of the same number made a 1 MiB object answer with 300 MiB. A frame is sent once, the list names
no more frames than the object has, and its text has a length cap so the check itself is cheap."""

from __future__ import annotations

from archive.pixels.decode_pool import CallerError

# about 1,800 four-digit numbers; the HTTP front ends refuse request lines past ~16 KiB anyway
MAX_FRAME_LIST_CHARS = 8192


class BadFrameList(CallerError, ValueError):
    """The list itself is wrong (answered 400 with this message)."""


def parse_frame_list(text: str) -> list[int]:
    """The numbers in `text`, in the order given; BadFrameList when they cannot be a frame list."""
    if len(text) > MAX_FRAME_LIST_CHARS:
        raise BadFrameList(f"the frame list is {len(text)} characters long; at most {MAX_FRAME_LIST_CHARS} are taken")
    try:
        numbers = [int(n) for n in text.split(",") if n.strip()]
    except ValueError:
        raise BadFrameList(f"frame list {text[:80]!r} must be numbers separated by commas") from None
    if not numbers:
        raise BadFrameList("no frame numbers given")
    _refuse_repeats(numbers)
    return numbers


def _refuse_repeats(numbers: list[int]) -> None:
    seen: set[int] = set()
    for n in numbers:
        if n in seen:
            raise BadFrameList(f"frame {n} is listed more than once; each frame is sent once, ask for it once")
        seen.add(n)


def check_against(numbers: list[int], count: int) -> None:
    """BadFrameList when the list is longer than the object's `count` frames."""
    if len(numbers) > count:
        raise BadFrameList(f"{len(numbers)} frame numbers given; the instance has {count} frame(s)")
