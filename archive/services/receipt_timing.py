"""How long receipt takes in each DIMSE SCP, from the moment a C-STORE's dataset is in (pynetdicom
has spooled it) to its durable answer (parsed, fsync'd, indexed): a histogram each SCP keeps in memory and publishes to Redis every few
seconds, so `/metrics` on any Serve replica shows every SCP in the cluster (the SCPs run in other
processes, on other nodes, and serve no HTTP). An SCP that stops publishing drops out after `TTL`.
Timings and counts only: nothing names a patient."""

from __future__ import annotations

import threading
from collections import Counter
from dataclasses import dataclass, field

from redis.asyncio import Redis

BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
KEY_PREFIX = "dicomflow:metrics:scp:"
TTL = 60


@dataclass
class ReceiptHistogram:
    counts: list[int] = field(default_factory=lambda: [0] * (len(BUCKETS) + 1))  # the last: above every bucket
    total: float = 0.0
    outcomes: Counter[str] = field(default_factory=Counter)  # stored, duplicate, invalid, conflict, ...
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def observe(self, seconds: float, outcome: str = "stored") -> None:
        slot = next((i for i, bound in enumerate(BUCKETS) if seconds <= bound), len(BUCKETS))
        with self._lock:  # pynetdicom runs one thread per association
            self.counts[slot] += 1
            self.total += seconds
            self.outcomes[outcome] += 1

    def fields(self) -> dict[str, str]:
        with self._lock:
            return {
                **{f"b{i}": str(n) for i, n in enumerate(self.counts)},
                "sum": repr(self.total),
                **{f"o:{name}": str(n) for name, n in self.outcomes.items()},
            }


@dataclass(frozen=True)
class Published:
    scp: str
    cumulative: list[tuple[str, float]]  # (le, count at or below), "+Inf" last
    total: float
    outcomes: dict[str, float]


async def publish(redis: Redis, scp: str, histogram: ReceiptHistogram) -> None:
    key = KEY_PREFIX + scp
    async with redis.pipeline(transaction=True) as pipe:
        pipe.hset(key, mapping=histogram.fields())  # type: ignore[arg-type]  # redis-py types its keys invariantly
        pipe.expire(key, TTL)
        await pipe.execute()


async def read_published(redis: Redis) -> list[Published]:
    found = []
    async for raw_key in redis.scan_iter(match=KEY_PREFIX + "*", count=100):
        key = raw_key.decode() if isinstance(raw_key, bytes) else str(raw_key)
        stored = {(k.decode() if isinstance(k, bytes) else k): float(v) for k, v in (await redis.hgetall(key)).items()}
        running, cumulative = 0.0, []
        for i, bound in enumerate([*map(str, BUCKETS), "+Inf"]):
            running += stored.get(f"b{i}", 0.0)
            cumulative.append((bound, running))
        outcomes = {k.removeprefix("o:"): v for k, v in stored.items() if k.startswith("o:")}
        found.append(Published(key.removeprefix(KEY_PREFIX), cumulative, stored.get("sum", 0.0), outcomes))
    return sorted(found, key=lambda p: p.scp)
