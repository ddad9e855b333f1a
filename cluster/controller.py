"""The cluster controller: one detached, named Ray actor that owns every DIMSE SCP and workflow
worker actor and keeps their placement true to the nodes alive now.

Every few seconds it compares what runs with what should: an SCP set (`scp_processes` actors
sharing the port) on each node with the `dimse` role, listening on that node's address;
`workflow_workers` workers spread over nodes with the `worker` role. A node that joins gets its
actors without a restart; actors of a lost node are replaced elsewhere; a draining node gets no
new actors and its SCPs stop taking associations. `dicomflow scale/status/leave` call it by name.
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import ray
from ray.actor import ActorClass, ActorHandle
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from archive.config.settings import Settings
from cluster.placement import RESOURCE_PREFIX, Node, alive_nodes, node_settings, placement_problem

log = logging.getLogger("dicomflow.controller")
CONTROLLER_NAME = "dicomflow-controller"
NAMESPACE = "dicomflow"
RECONCILE_SECONDS = 2.0


@dataclass
class Placed:
    kind: str  # "scp", "hl7" or "worker"
    node: Node
    handle: ActorHandle
    started: asyncio.Task = field(repr=False)


def _answered(placed: Placed) -> bool:
    """Its `ready()` came back: the SCP listens, the worker polls its task queue."""
    return placed.started.done() and not placed.started.cancelled() and placed.started.exception() is None


def _on(node: Node) -> NodeAffinitySchedulingStrategy:
    return NodeAffinitySchedulingStrategy(node_id=node.node_id, soft=False)


@ray.remote(num_cpus=0, max_restarts=-1)
class ClusterController:
    def __init__(self, settings_data: dict[str, Any]) -> None:
        # a restarted controller keeps what `dicomflow scale` set since `up` (var/run/scale.json)
        self.settings = Settings.model_validate({**settings_data, **_scaled(Settings.model_validate(settings_data))})
        self.workers_wanted = self.settings.cluster.workflow_workers
        self.placed: list[Placed] = []
        self.draining: set[str] = set()
        self.refused: dict[str, str] = {}
        self.loop_task: asyncio.Task | None = None

    async def start(self) -> None:
        await self.reconcile()
        if self.loop_task is None:
            self.loop_task = asyncio.get_running_loop().create_task(self._forever())

    async def _forever(self) -> None:
        while True:
            await asyncio.sleep(RECONCILE_SECONDS)
            try:
                await self.reconcile()
            except Exception:  # noqa: BLE001 - a failed round is retried at the next tick
                log.exception("reconcile round failed")

    async def ready(self, timeout: float = 120) -> list[str]:
        """Wait until every actor placed so far answers; their descriptions."""
        return list(await asyncio.wait_for(asyncio.gather(*(p.started for p in self.placed)), timeout))

    async def reconcile(self) -> None:
        nodes = alive_nodes(ray.nodes())
        alive = {node.node_id for node in nodes}
        self.placed = [p for p in self.placed if p.node.node_id in alive]
        for node in nodes:
            if node.node_id in self.draining:
                continue
            problem = placement_problem(self.settings, node)
            if problem:
                self.refused[node.node_id] = problem
                continue
            self.refused.pop(node.node_id, None)
            if "dimse" in node.roles and not self._on_node("scp", node):
                for index in range(self.settings.cluster.scp_processes):
                    self._place_scp(node, index)
            if "dimse" in node.roles and self.settings.hl7.enabled and not self._on_node("hl7", node):
                self._place_hl7(node)
        await self._balance_workers(
            [n for n in nodes if "worker" in n.roles and n.node_id not in self.draining and n.node_id not in self.refused]
        )

    def _on_node(self, kind: str, node: Node) -> list[Placed]:
        return [p for p in self.placed if p.kind == kind and p.node.node_id == node.node_id]

    def _place_hl7(self, node: Node) -> None:
        from actors.hl7_listener import Hl7ListenerActor

        data = node_settings(self.settings, node).model_dump(mode="json")
        handle = cast(
            ActorHandle,
            cast(ActorClass, Hl7ListenerActor)
            .options(name=f"dicomflow-hl7-{node.node_id[:12]}", scheduling_strategy=_on(node))
            .remote(data),
        )
        self.placed.append(Placed("hl7", node, handle, asyncio.ensure_future(handle.ready.remote())))

    def _place_scp(self, node: Node, index: int) -> None:
        from actors.scp import DimseScpActor

        data = node_settings(self.settings, node).model_dump(mode="json")
        handle = cast(
            ActorHandle,
            cast(ActorClass, DimseScpActor)
            .options(
                name=f"dicomflow-scp-{node.node_id[:12]}-{index}",
                scheduling_strategy=_on(node),
                resources={RESOURCE_PREFIX + "dimse": 0.001},
            )
            .remote(data, index),
        )
        self.placed.append(Placed("scp", node, handle, asyncio.ensure_future(handle.ready.remote())))

    async def _balance_workers(self, nodes: list[Node]) -> None:
        workers = [p for p in self.placed if p.kind == "worker"]
        while len(workers) < self.workers_wanted and nodes:
            fewest = min(nodes, key=lambda n: len(self._on_node("worker", n)))
            workers.append(self._place_worker(fewest))
        for extra in workers[self.workers_wanted :]:
            await self._retire(extra)

    def _place_worker(self, node: Node) -> Placed:
        from actors.worker import WorkflowWorkerActor

        data = node_settings(self.settings, node).model_dump(mode="json")
        handle = cast(
            ActorHandle,
            cast(ActorClass, WorkflowWorkerActor)
            .options(scheduling_strategy=_on(node), resources={RESOURCE_PREFIX + "worker": 0.001})
            .remote(data),
        )
        placed = Placed("worker", node, handle, asyncio.ensure_future(handle.ready.remote()))
        self.placed.append(placed)
        return placed

    async def _retire(self, placed: Placed) -> None:
        """Let the actor finish what it holds (an open association, a running activity), then go."""
        self.placed.remove(placed)
        try:
            await asyncio.wait_for(placed.handle.stop.remote(), timeout=60)
        except Exception:  # noqa: BLE001 - it is killed either way
            log.warning("%s on %s did not stop cleanly", placed.kind, placed.node.address)
        ray.kill(placed.handle, no_restart=True)

    def admission_problem(self, roles: list[str], joining_address: str = "(joining)") -> str | None:
        """Why a new node with these roles would be refused (before it starts anything)."""
        return placement_problem(self.settings, Node("new", joining_address, frozenset(roles), is_head=False))

    async def scale(self, workers: int | None = None, web: tuple[int, int | None] | None = None) -> dict[str, Any]:
        """New counts, live: workflow workers placed or retired; DICOMweb replicas redeployed with
        new bounds (Serve replaces them one at a time)."""
        if web is not None:
            from cluster.web_scaling import deploy_dicomweb, with_web_bounds

            self.settings = with_web_bounds(self.settings, *web)
            await asyncio.to_thread(deploy_dicomweb, self.settings)
        if workers is not None:
            self.workers_wanted = max(0, workers)
        _remember_scale(self.settings, self.workers_wanted)
        await self.reconcile()
        await self.ready()
        return await self.status()

    async def drain(self, address: str) -> list[str]:
        """Stop placing on the node at `address` and retire its actors; its workers move elsewhere."""
        nodes = [n for n in alive_nodes(ray.nodes()) if n.address == address and not n.is_head]
        self.draining.update(n.node_id for n in nodes)
        leaving = [p for p in self.placed if p.node.node_id in self.draining]
        await asyncio.gather(*(self._retire(p) for p in leaving))
        await self.reconcile()
        return [n.node_id for n in nodes]

    async def stop_all(self) -> None:
        if self.loop_task:
            self.loop_task.cancel()
        await asyncio.gather(*(self._retire(p) for p in list(self.placed)), return_exceptions=True)

    async def status(self) -> dict[str, Any]:
        from cluster.web_scaling import replicas_by_node, web_report

        nodes = alive_nodes(ray.nodes())
        try:
            replicas: dict[str, int] | None = dict(await asyncio.to_thread(replicas_by_node))
        except Exception:  # noqa: BLE001 - the dashboard may be down; the rest of the report stands
            replicas = None
        return {
            "workers_wanted": self.workers_wanted,
            "web": await asyncio.to_thread(web_report, self.settings),
            "nodes": [
                {
                    "node_id": n.node_id,
                    "address": n.address,
                    "roles": sorted(n.roles),
                    "head": n.is_head,
                    "draining": n.node_id in self.draining,
                    "refused": self.refused.get(n.node_id),
                    "scp_actors": len(self._on_node("scp", n)),
                    "worker_actors": len(self._on_node("worker", n)),
                    "scp_ready": sum(_answered(p) for p in self._on_node("scp", n)),
                    "workers_ready": sum(_answered(p) for p in self._on_node("worker", n)),
                    "web_replicas": None if replicas is None else replicas.get(n.node_id, 0),
                }
                for n in nodes
            ],
        }


def scale_file(settings: Settings) -> Path:
    return settings.var_path / "run" / "scale.json"


def _remember_scale(settings: Settings, workers: int) -> None:
    choice = {
        "workflow_workers": workers,
        "serve_replicas": settings.web.serve_replicas,
        "serve_max_replicas": settings.web.serve_max_replicas,
    }
    scale_file(settings).write_text(json.dumps(choice) + "\n")


def _scaled(settings: Settings) -> dict[str, Any]:
    """What `dicomflow scale` chose since this `up` started (`up` removes the file as it starts)."""
    try:
        return dict(json.loads(scale_file(settings).read_text()))
    except (OSError, ValueError):
        return {}
