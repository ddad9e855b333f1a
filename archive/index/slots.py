"""A bounded number of senders per destination, across every worker: a PACS accepts few
associations, and a busy day's forwards must not all open one at once. A slot is a PostgreSQL
session advisory lock (destination, n), held on a connection of its own while the sender sends, so a
worker that dies gives its slot back with its connection."""

from __future__ import annotations

import zlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from psycopg import AsyncConnection

SLOT_SPACE = 0x64667300  # "dfs": keeps these locks apart from the index's other advisory locks


class NoSlotFree(RuntimeError):
    """Every slot of the destination is held: try again later."""


def slot_key(destination: str) -> int:
    """The first key of a destination's slots (the second is the slot's number), as pg_locks shows it."""
    return (zlib.crc32(destination.encode()) ^ SLOT_SPACE) - 2**31  # a signed 32-bit key


@asynccontextmanager
async def destination_slot(dsn: str, destination: str, slots: int) -> AsyncIterator[int]:
    """One of the destination's `slots` slots for as long as the block runs; NoSlotFree when none is.
    The connection is its own, not the pool's: a sender holding a slot must not starve the pool its
    own steps read from."""
    key = slot_key(destination)
    async with await AsyncConnection.connect(dsn, autocommit=True) as conn:
        for slot in range(slots):
            row = await (await conn.execute("SELECT pg_try_advisory_lock(%s, %s)", (key, slot))).fetchone()
            if row and row[0]:
                try:
                    yield slot
                finally:
                    await conn.execute("SELECT pg_advisory_unlock(%s, %s)", (key, slot))
                return
    raise NoSlotFree(f"{destination}: all {slots} sending slots are in use")
