"""GET /metrics (Prometheus text format): the index's counts (archive/index/metrics.py) and this
replica's own request latencies. Operators' data: an admin token when auth is on."""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter, Depends, HTTPException
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Receive, Scope, Send

from archive.identity import Role
from archive.index.metrics import FAMILIES, Sample, index_samples
from archive.services.receipt_timing import Published, read_published
from serve.deps import CacheDep, Caller, Pool, ResourcesDep

router = APIRouter(tags=["Metrics"])
REPLICA = CollectorRegistry()
STOW_RECEIPTS = Counter(
    "dicomflow_stow_receipts",
    "STOW-RS instances in this replica by outcome (stored, duplicate, invalid, conflict, mismatch, failed)",
    ["outcome"],
    registry=REPLICA,
)
REQUEST_SECONDS = Histogram(
    "dicomflow_http_request_seconds",
    "DICOMweb request time in this replica, by route",
    ["method", "route", "status"],
    registry=REPLICA,
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)


class _Snapshot(Collector):
    """A collector over samples already read (prometheus_client collectors are synchronous)."""

    def __init__(self, samples: list[Sample]) -> None:
        self.samples = samples

    def collect(self) -> list[GaugeMetricFamily]:
        families = {name: GaugeMetricFamily(name, help_text, labels=labels) for name, help_text, labels in FAMILIES}
        for s in self.samples:
            families[s.name].add_metric(list(s.labels.values()), s.value)
        return list(families.values())


async def _operator(caller: Caller) -> None:
    """Operators only, and not audited: a scrape every 15 s would drown the trail (no patient data here)."""
    if not caller.has(Role.OPERATOR):  # they count every tenant's objects
        raise HTTPException(403, f"metrics cover every tenant and need the 'operator' role, which {caller.subject} does not have")


class _ScpReceipts(Collector):
    """The receipt-time histograms every SCP actor published (archive/services/receipt_timing.py)."""

    def __init__(self, published: list[Published]) -> None:
        self.published = published

    def collect(self) -> list[HistogramMetricFamily | CounterMetricFamily]:
        times = HistogramMetricFamily(
            "dicomflow_dimse_receipt_seconds",
            "C-STORE receipt time in each DIMSE SCP, dataset in to durable answer",
            labels=["scp"],
        )
        outcomes = CounterMetricFamily(
            "dicomflow_dimse_receipts",
            "C-STORE receipts in each DIMSE SCP by outcome "
            "(stored, duplicate, invalid, conflict, mismatch, failed, not_authorized)",
            labels=["scp", "outcome"],
        )
        for p in self.published:
            times.add_metric([p.scp], buckets=p.cumulative, sum_value=p.total)
            for outcome, count in sorted(p.outcomes.items()):
                outcomes.add_metric([p.scp, outcome], count)
        return [times, outcomes]


class _AuditLosses(Collector):
    """Audit events this replica could not keep (a full queue while the index was unreachable):
    a number to alert on, besides the Security Alert the trail gets once it can be written."""

    def __init__(self, lost: int) -> None:
        self.lost = lost

    def collect(self) -> list[CounterMetricFamily]:
        family = CounterMetricFamily("dicomflow_audit_lost_events", "audit events lost to a full queue in this replica")
        family.add_metric([], self.lost)
        return [family]


@router.get("/metrics", summary="Prometheus metrics", dependencies=[Depends(_operator)])
async def metrics(pool: Pool, cache: CacheDep, resources: ResourcesDep) -> Response:
    registry = CollectorRegistry()
    registry.register(_AuditLosses(resources.audit.dropped))
    registry.register(_Snapshot(await index_samples(pool)))
    registry.register(_ScpReceipts(await read_published(cache.client)))
    body = generate_latest(registry) + generate_latest(REPLICA)
    return Response(body, media_type=CONTENT_TYPE_LATEST)


class LatencyMiddleware:
    """Times each request under its route's path template (bounded labels: no UIDs in them)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started, status = time.perf_counter(), {"code": 500}

        async def watch(message: Any) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, watch)
        finally:
            route = getattr(scope.get("route"), "path", "unmatched")
            REQUEST_SECONDS.labels(scope["method"], route, f"{status['code'] // 100}xx").observe(time.perf_counter() - started)
